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
//!
//! Errors are JSON `{"error": "..."}` with a 4xx/5xx status.

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use tonic::{Request, Status};
use weir_proto::admin as api;

use crate::actor::{AdminError, CoordinatorHandle};

/// The gRPC face of the admin API.
pub struct AdminService {
    handle: CoordinatorHandle,
}

impl AdminService {
    pub fn new(handle: CoordinatorHandle) -> Self {
        AdminService { handle }
    }
}

type Reply<T> = Result<tonic::Response<T>, Status>;

#[tonic::async_trait]
impl api::admin_server::Admin for AdminService {
    async fn get_cluster(&self, _: Request<api::GetClusterRequest>) -> Reply<api::ClusterStatus> {
        Ok(tonic::Response::new(self.handle.cluster().await?))
    }

    async fn get_job(&self, _: Request<api::GetJobRequest>) -> Reply<api::JobStatus> {
        Ok(tonic::Response::new(self.handle.job().await?))
    }

    async fn stop_job(&self, _: Request<api::StopJobRequest>) -> Reply<api::JobStatus> {
        Ok(tonic::Response::new(self.handle.stop().await?))
    }

    async fn resume_job(&self, _: Request<api::ResumeJobRequest>) -> Reply<api::JobStatus> {
        Ok(tonic::Response::new(self.handle.resume().await?))
    }

    async fn list_checkpoints(
        &self,
        _: Request<api::ListCheckpointsRequest>,
    ) -> Reply<api::CheckpointList> {
        Ok(tonic::Response::new(self.handle.checkpoints().await?))
    }

    async fn trigger_checkpoint(
        &self,
        _: Request<api::TriggerCheckpointRequest>,
    ) -> Reply<api::CheckpointList> {
        Ok(tonic::Response::new(
            self.handle.trigger_checkpoint().await?,
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
            AdminError::Unavailable => ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }
}

/// The REST router.
pub fn router(handle: CoordinatorHandle) -> axum::Router {
    axum::Router::new()
        .route("/api/v1/cluster", get(cluster))
        .route("/api/v1/job", get(job))
        .route("/api/v1/job/stop", post(stop))
        .route("/api/v1/job/resume", post(resume))
        .route(
            "/api/v1/checkpoints",
            get(checkpoints).post(trigger_checkpoint),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(handle)
}

async fn cluster(State(h): State<CoordinatorHandle>) -> Result<Json<api::ClusterStatus>, ApiError> {
    Ok(Json(h.cluster().await?))
}

async fn job(State(h): State<CoordinatorHandle>) -> Result<Json<api::JobStatus>, ApiError> {
    Ok(Json(h.job().await?))
}

async fn stop(State(h): State<CoordinatorHandle>) -> Result<Json<api::JobStatus>, ApiError> {
    Ok(Json(h.stop().await?))
}

async fn resume(State(h): State<CoordinatorHandle>) -> Result<Json<api::JobStatus>, ApiError> {
    Ok(Json(h.resume().await?))
}

async fn checkpoints(
    State(h): State<CoordinatorHandle>,
) -> Result<Json<api::CheckpointList>, ApiError> {
    Ok(Json(h.checkpoints().await?))
}

async fn trigger_checkpoint(
    State(h): State<CoordinatorHandle>,
) -> Result<Json<api::CheckpointList>, ApiError> {
    Ok(Json(h.trigger_checkpoint().await?))
}

async fn readyz(State(h): State<CoordinatorHandle>) -> Result<&'static str, ApiError> {
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

async fn metrics(State(h): State<CoordinatorHandle>) -> Result<impl IntoResponse, ApiError> {
    let job = h.job().await?;
    let cluster = h.cluster().await?;
    let text = crate::prometheus::render(&job, &cluster);
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    ))
}
