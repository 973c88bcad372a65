//! The `weir.shuffle.Shuffle` service's two ends with the shuffle's own
//! codec ([`super::codec`]) rather than prost's: the code tonic would
//! generate for it, by hand. The generated client and server
//! (`weir_proto::shuffle`) speak the same protocol, only more slowly.

use std::convert::Infallible;
use std::sync::Arc;

use tonic::codegen::http::uri::PathAndQuery;
use tonic::codegen::{http, Body, BoxFuture, Context, GrpcMethod, Poll, Service, StdError};
use tonic::server::{ClientStreamingService, Grpc, NamedService};
use tonic::{Request, Response, Status, Streaming};
use weir_proto::auth::SecretChannel;
use weir_proto::shuffle as pb;
use weir_proto::shuffle::shuffle_server::SERVICE_NAME;

use super::codec::{Frame, ReceiverCodec, SenderCodec};
use super::ShuffleService;

/// The one method's path.
const EXCHANGE: &str = "/weir.shuffle.Shuffle/Exchange";

/// The shuffle service for a tonic server: [`ShuffleService`] with the
/// shuffle's codec.
#[derive(Clone)]
pub struct ShuffleServer {
    service: Arc<ShuffleService>,
    max_decoding_message_size: Option<usize>,
    max_encoding_message_size: Option<usize>,
}

impl ShuffleServer {
    pub fn new(service: ShuffleService) -> Self {
        ShuffleServer {
            service: Arc::new(service),
            max_decoding_message_size: None,
            max_encoding_message_size: None,
        }
    }

    /// Limits the size of a received frame (tonic's default: 4 MiB).
    #[must_use]
    pub fn max_decoding_message_size(mut self, limit: usize) -> Self {
        self.max_decoding_message_size = Some(limit);
        self
    }

    /// Limits the size of a sent message.
    #[must_use]
    pub fn max_encoding_message_size(mut self, limit: usize) -> Self {
        self.max_encoding_message_size = Some(limit);
        self
    }
}

impl NamedService for ShuffleServer {
    const NAME: &'static str = SERVICE_NAME;
}

/// The `Exchange` method of one request.
struct Exchange(Arc<ShuffleService>);

impl ClientStreamingService<Frame> for Exchange {
    type Response = pb::ShuffleSummary;
    type Future = BoxFuture<Response<pb::ShuffleSummary>, Status>;

    fn call(&mut self, request: Request<Streaming<Frame>>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.exchange(request).await })
    }
}

impl<B> Service<http::Request<B>> for ShuffleServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != EXCHANGE {
            let status = Status::unimplemented(format!(
                "{} is not a method of {SERVICE_NAME}",
                request.uri().path()
            ));
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let method = Exchange(self.service.clone());
        let mut grpc = Grpc::new(ReceiverCodec).apply_max_message_size_config(
            self.max_decoding_message_size,
            self.max_encoding_message_size,
        );
        Box::pin(async move { Ok(grpc.client_streaming(method, request).await) })
    }
}

/// The sending end of a shuffle stream.
pub struct ShuffleClient {
    grpc: tonic::client::Grpc<SecretChannel>,
}

impl ShuffleClient {
    /// A client on `channel`; `max_message_size` limits the frames it
    /// sends and the summary it receives.
    pub fn new(channel: SecretChannel, max_message_size: usize) -> Self {
        ShuffleClient {
            grpc: tonic::client::Grpc::new(channel)
                .max_decoding_message_size(max_message_size)
                .max_encoding_message_size(max_message_size),
        }
    }

    /// Streams `frames` to the peer; its summary once they all arrived.
    pub async fn exchange(
        &mut self,
        frames: impl tokio_stream::Stream<Item = Frame> + Send + 'static,
    ) -> Result<Response<pb::ShuffleSummary>, Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("the shuffle peer is not ready: {e}")))?;
        let mut request = Request::new(frames);
        request
            .extensions_mut()
            .insert(GrpcMethod::new(SERVICE_NAME, "Exchange"));
        self.grpc
            .client_streaming(request, PathAndQuery::from_static(EXCHANGE), SenderCodec)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_is_the_generated_one() {
        assert_eq!(EXCHANGE, format!("/{SERVICE_NAME}/Exchange"));
    }
}
