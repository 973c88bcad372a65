//! The admin API: the same operations over gRPC (`weir.admin.Admin`) and
//! REST/JSON, plus `/healthz`, `/readyz` and Prometheus `/metrics`.
//!
//! REST endpoints (JSON bodies are the admin protobuf messages):
//!
//! | method | path | answer |
//! | --- | --- | --- |
//! | GET | `/api/v1/cluster` | `ClusterStatus` |
//! | GET | `/api/v1/job` | `JobStatus` |
//! | POST | `/api/v1/job/stop` | `JobStatus`, or 409 if there is nothing to stop |
//! | POST | `/api/v1/job/resume` | `JobStatus`, or 409 unless stopped or failed |
//! | POST | `/api/v1/job/rescale` `{"workers": N}` | `JobStatus`; 409 outside Kubernetes or when the API refuses, 503 when it may work later |
//!
//! Errors are JSON `{"error": "..."}` with a 4xx/5xx status.
//!
//! With an admin token ([`crate::auth`]) every call that changes something
//! needs `Authorization: Bearer <token>` (REST: 401; gRPC:
//! `UNAUTHENTICATED`), and reads too when so configured.

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use tonic::{Request, Status};
use weir_proto::admin as api;

use crate::actor::AdminError;
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

/// A JSON error answer.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Conflict(m) => ApiError(StatusCode::CONFLICT, m),
            AdminError::Invalid(m) => ApiError(StatusCode::BAD_REQUEST, m),
            AdminError::Unavailable => ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            AdminError::TryAgain(m) => ApiError(StatusCode::SERVICE_UNAVAILABLE, m),
        }
    }
}

/// The REST router, behind the admin token when there is one.
pub fn router(gateway: Gateway, auth: AdminAuth) -> axum::Router {
    axum::Router::new()
        .route("/api/v1/cluster", get(cluster))
        .route("/api/v1/job", get(job))
        .route("/api/v1/job/stop", post(stop))
        .route("/api/v1/job/resume", post(resume))
        .route("/api/v1/job/rescale", post(rescale))
        .route(
            "/api/v1/checkpoints",
            get(checkpoints).post(trigger_checkpoint),
        )
        .route(
            "/api/v1/checkpoints/interval",
            axum::routing::put(set_checkpoint_interval),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(gateway)
        .layer(axum::middleware::from_fn_with_state(
            auth,
            crate::auth::require,
        ))
}

async fn cluster(State(h): State<Gateway>) -> Result<Json<api::ClusterStatus>, ApiError> {
    Ok(Json(h.cluster().await?))
}

async fn job(State(h): State<Gateway>) -> Result<Json<api::JobStatus>, ApiError> {
    Ok(Json(h.job().await?))
}

/// A JSON request body, or the message's defaults when there is none.
fn body<T: serde::de::DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("bad request body: {e}")))
}

async fn stop(
    State(h): State<Gateway>,
    bytes: axum::body::Bytes,
) -> Result<Json<api::JobStatus>, ApiError> {
    let request: api::StopJobRequest = body(&bytes)?;
    Ok(Json(h.stop_request(request).await?))
}

async fn resume(
    State(h): State<Gateway>,
    bytes: axum::body::Bytes,
) -> Result<Json<api::JobStatus>, ApiError> {
    let request: api::ResumeJobRequest = body(&bytes)?;
    let from = Some(request.from).filter(|f| !f.trim().is_empty());
    Ok(Json(h.resume(from).await?))
}

async fn rescale(
    State(h): State<Gateway>,
    bytes: axum::body::Bytes,
) -> Result<Json<api::JobStatus>, ApiError> {
    let request: api::RescaleRequest = body(&bytes)?;
    Ok(Json(h.rescale(request.workers).await?))
}

async fn checkpoints(State(h): State<Gateway>) -> Result<Json<api::CheckpointList>, ApiError> {
    Ok(Json(h.checkpoints().await?))
}

async fn trigger_checkpoint(
    State(h): State<Gateway>,
    bytes: axum::body::Bytes,
) -> Result<Json<api::CheckpointList>, ApiError> {
    let request: api::TriggerCheckpointRequest = body(&bytes)?;
    Ok(Json(h.trigger_checkpoint(request.savepoint).await?))
}

async fn set_checkpoint_interval(
    State(h): State<Gateway>,
    bytes: axum::body::Bytes,
) -> Result<Json<api::CheckpointList>, ApiError> {
    let request: api::SetCheckpointIntervalRequest = body(&bytes)?;
    let interval = std::time::Duration::from_millis(request.interval_ms);
    Ok(Json(h.set_checkpoint_interval(interval).await?))
}

async fn readyz(State(h): State<Gateway>) -> Result<&'static str, ApiError> {
    h.job().await?;
    Ok("ready\n")
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!(
            "no such endpoint: {} (see /api/v1/cluster, /api/v1/job, /api/v1/checkpoints)",
            uri.path()
        ),
    )
}

async fn method_not_allowed(uri: Uri) -> ApiError {
    ApiError(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} does not take this method (reads are GET, actions are POST)",
            uri.path()
        ),
    )
}

/// The job's metrics on the coordinator that runs it; on a follower only
/// that it does not (see [`crate::prometheus::render_leadership`]).
async fn metrics(State(h): State<Gateway>) -> Result<impl IntoResponse, ApiError> {
    let text = match h.local_handle() {
        Some(local) => {
            let job = local.job().await?;
            let cluster = local.cluster().await?;
            let checkpoints = local.checkpoints().await?;
            let mut text = crate::prometheus::render(&job, &cluster, &checkpoints);
            text.push_str(&crate::prometheus::render_leadership(
                true,
                job.raft.as_ref(),
            ));
            text
        }
        None => crate::prometheus::render_leadership(false, h.raft_status().as_ref()),
    };
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    ))
}
