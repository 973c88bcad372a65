//! The cluster's shared secret on its internal gRPC calls: worker →
//! coordinator (control stream), worker → worker (shuffle), coordinator →
//! coordinator (raft, proxied admin requests).
//!
//! With a secret configured, every process sends it in the
//! `weir-cluster-secret` metadata and refuses calls without it
//! (`UNAUTHENTICATED`), so that a stray process on the network cannot
//! register as a worker, feed records into a shuffle or vote in the raft
//! group. Without one (a laptop, `weir local`) nothing is sent or checked.
//! The secret protects the calls, not the bytes: use TLS where the network
//! is not trusted.

use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Request, Status};
pub use weir_common::secret::Secret;

/// The metadata key the secret travels in.
pub const CLUSTER_SECRET_KEY: &str = "weir-cluster-secret";

/// The cluster's shared secret, if it has one.
#[derive(Clone, Debug, Default)]
pub struct ClusterSecret(Option<Secret>);

/// A channel whose calls carry the cluster secret.
pub type SecretChannel = InterceptedService<Channel, Attach>;

impl ClusterSecret {
    pub fn new(secret: Option<Secret>) -> Self {
        ClusterSecret(secret)
    }

    /// No secret: nothing sent, nothing checked.
    pub fn none() -> Self {
        ClusterSecret(None)
    }

    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// The interceptor of a client: adds the secret to every call.
    pub fn attach(&self) -> Attach {
        // Checked printable ASCII when the secret was read.
        Attach(self.0.as_ref().and_then(|s| s.expose().parse().ok()))
    }

    /// `channel` with the secret on every call.
    pub fn channel(&self, channel: Channel) -> SecretChannel {
        InterceptedService::new(channel, self.attach())
    }

    /// The interceptor of a server: refuses calls without the secret.
    pub fn require(&self) -> Require {
        Require(self.clone())
    }

    /// Whether `metadata` carries the secret (always, without one).
    pub fn check(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let Some(secret) = &self.0 else {
            return Ok(());
        };
        match metadata.get(CLUSTER_SECRET_KEY) {
            Some(offered) if secret.matches(offered.as_bytes()) => Ok(()),
            Some(_) => Err(Status::unauthenticated(
                "wrong cluster secret: this process's WEIR_CLUSTER_SECRET (or --cluster-secret-env) differs from the cluster's",
            )),
            None => Err(Status::unauthenticated(
                "this cluster needs its shared secret: set WEIR_CLUSTER_SECRET (or --cluster-secret-env) to the cluster's",
            )),
        }
    }
}

/// Adds the cluster secret to outgoing calls.
#[derive(Clone, Debug)]
pub struct Attach(Option<AsciiMetadataValue>);

impl Interceptor for Attach {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert(CLUSTER_SECRET_KEY, value.clone());
        }
        Ok(request)
    }
}

/// Refuses incoming calls without the cluster secret.
#[derive(Clone, Debug)]
pub struct Require(ClusterSecret);

impl Interceptor for Require {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.0.check(request.metadata())?;
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> ClusterSecret {
        ClusterSecret::new(Some(Secret::new(s).expect("secret")))
    }

    #[test]
    fn a_call_with_the_secret_passes_and_others_are_refused() {
        let cluster = secret("s3cret");
        let sent = cluster.attach().call(Request::new(())).expect("attach");
        assert!(cluster.require().call(sent).is_ok());

        let bare = cluster.require().call(Request::new(()));
        assert_eq!(
            bare.expect_err("refused").code(),
            tonic::Code::Unauthenticated
        );

        let wrong = secret("other")
            .attach()
            .call(Request::new(()))
            .expect("attach");
        let refused = cluster.require().call(wrong).expect_err("refused");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert!(!refused.message().contains("s3cret"));
    }

    #[test]
    fn without_a_secret_nothing_is_sent_or_checked() {
        let sent = ClusterSecret::none()
            .attach()
            .call(Request::new(()))
            .expect("attach");
        assert!(sent.metadata().get(CLUSTER_SECRET_KEY).is_none());
        assert!(ClusterSecret::none().require().call(sent).is_ok());
    }
}
