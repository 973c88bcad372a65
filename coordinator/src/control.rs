//! The `Cluster` gRPC service: one control stream per worker.
//!
//! The handler checks the registration and forwards everything to the
//! actor; the actor's commands for the worker flow back on the response
//! stream. When the worker's stream ends, the actor hears of it at once.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use weir_proto::cluster as pb;

use crate::actor::Msg;
use crate::gateway::Gateway;

pub struct ControlService {
    gateway: Gateway,
    connections: AtomicU64,
}

impl ControlService {
    pub fn new(gateway: Gateway) -> Self {
        ControlService {
            gateway,
            connections: AtomicU64::new(0),
        }
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ControlService {
    type ControlStream = ReceiverStream<Result<pb::CoordinatorCommand, Status>>;

    async fn control(
        &self,
        request: Request<Streaming<pb::WorkerEvent>>,
    ) -> Result<Response<Self::ControlStream>, Status> {
        let mut events = request.into_inner();
        let first = events.message().await?.ok_or_else(|| {
            Status::invalid_argument("the control stream ended before registering")
        })?;
        let Some(pb::worker_event::Event::Register(register)) = first.event else {
            return Err(Status::invalid_argument(
                "the first message on the control stream must be Register",
            ));
        };
        if register.worker_id.trim().is_empty() {
            return Err(Status::invalid_argument(
                "Register.worker_id must not be empty",
            ));
        }
        if register.data_address.trim().is_empty() {
            return Err(Status::invalid_argument(
                "Register.data_address must not be empty",
            ));
        }
        // Workers register with the coordinator that runs the job; the
        // others tell them where it is.
        let Some(handle) = self.gateway.local_handle() else {
            return Err(self.gateway.not_leader());
        };
        let id = register.worker_id.clone();
        let conn = self.connections.fetch_add(1, Relaxed) + 1;
        let (commands, rx) = mpsc::channel(16);
        if !handle
            .send(Msg::Connected {
                register,
                conn,
                commands,
            })
            .await
        {
            return Err(Status::unavailable("the coordinator is shutting down"));
        }
        tokio::spawn(async move {
            while let Ok(Some(message)) = events.message().await {
                if let Some(event) = message.event {
                    let msg = Msg::Event {
                        id: id.clone(),
                        conn,
                        event: Box::new(event),
                    };
                    if !handle.send(msg).await {
                        return;
                    }
                }
            }
            handle.send(Msg::Disconnected { id, conn }).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
