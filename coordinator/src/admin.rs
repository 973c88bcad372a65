//! The admin API over gRPC (`weir.admin.Admin`); [`crate::rest`] serves the
//! same operations as REST/JSON.
//!
//! With an admin token ([`crate::auth`]) every call that changes something
//! needs `Authorization: Bearer <token>` (`UNAUTHENTICATED` without), and
//! reads too when so configured.

use tonic::{Request, Status};
use weir_proto::admin as api;

use crate::auth::{Access, AdminAuth};
use crate::gateway::{Gateway, PROXIED_KEY};

/// The gRPC face of the admin API.
pub struct AdminService {
    gateway: Gateway,
    auth: AdminAuth,
}

impl AdminService {
    pub fn new(gateway: Gateway, auth: AdminAuth) -> Self {
        AdminService { gateway, auth }
    }

    /// Where `request` is answered, once it is allowed: a request a
    /// follower proxied here is never proxied again.
    fn route<T>(&self, request: &Request<T>, access: Access) -> Result<Gateway, Status> {
        self.auth.check_grpc(access, request.metadata())?;
        Ok(if request.metadata().contains_key(PROXIED_KEY) {
            self.gateway.unproxied()
        } else {
            self.gateway.clone()
        })
    }
}

type Reply<T> = Result<tonic::Response<T>, Status>;

#[tonic::async_trait]
impl api::admin_server::Admin for AdminService {
    async fn get_cluster(&self, r: Request<api::GetClusterRequest>) -> Reply<api::ClusterStatus> {
        Ok(tonic::Response::new(
            self.route(&r, Access::Read)?.cluster().await?,
        ))
    }

    async fn get_job(&self, r: Request<api::GetJobRequest>) -> Reply<api::JobStatus> {
        Ok(tonic::Response::new(
            self.route(&r, Access::Read)?.job().await?,
        ))
    }

    async fn stop_job(&self, r: Request<api::StopJobRequest>) -> Reply<api::JobStatus> {
        let gateway = self.route(&r, Access::Write)?;
        Ok(tonic::Response::new(
            gateway.stop_request(r.into_inner()).await?,
        ))
    }

    async fn resume_job(&self, r: Request<api::ResumeJobRequest>) -> Reply<api::JobStatus> {
        let gateway = self.route(&r, Access::Write)?;
        let from = Some(r.into_inner().from).filter(|f| !f.trim().is_empty());
        Ok(tonic::Response::new(gateway.resume(from).await?))
    }

    async fn rescale(&self, r: Request<api::RescaleRequest>) -> Reply<api::JobStatus> {
        let gateway = self.route(&r, Access::Write)?;
        let workers = r.into_inner().workers;
        Ok(tonic::Response::new(gateway.rescale(workers).await?))
    }

    async fn list_checkpoints(
        &self,
        r: Request<api::ListCheckpointsRequest>,
    ) -> Reply<api::CheckpointList> {
        Ok(tonic::Response::new(
            self.route(&r, Access::Read)?.checkpoints().await?,
        ))
    }

    async fn trigger_checkpoint(
        &self,
        r: Request<api::TriggerCheckpointRequest>,
    ) -> Reply<api::CheckpointList> {
        let gateway = self.route(&r, Access::Write)?;
        let savepoint = r.into_inner().savepoint;
        Ok(tonic::Response::new(
            gateway.trigger_checkpoint(savepoint).await?,
        ))
    }

    async fn set_checkpoint_interval(
        &self,
        r: Request<api::SetCheckpointIntervalRequest>,
    ) -> Reply<api::CheckpointList> {
        let gateway = self.route(&r, Access::Write)?;
        let interval = std::time::Duration::from_millis(r.into_inner().interval_ms);
        Ok(tonic::Response::new(
            gateway.set_checkpoint_interval(interval).await?,
        ))
    }
}
