//! The admin API as REST/JSON, with its OpenAPI document.
//!
//! The JSON bodies are the admin protobuf messages (`weir.admin`), whose
//! schemas are derived from the same generated types. Routes and document
//! are built from one list ([`api_routes`]): a route cannot be served
//! without being documented, nor documented without being served. Errors
//! are JSON `{"error": "..."}` with a 4xx/5xx status; a request body that
//! is empty means the message's defaults.

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use weir_proto::admin as api;

use crate::actor::AdminError;
use crate::auth::AdminAuth;
use crate::gateway::Gateway;

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/api/openapi.json";

/// An error answer's body.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
}

/// A JSON error answer.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
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

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Weir admin API",
        description = "The coordinator's admin API: the job's state, its checkpoints, and the \
            actions on it. Any coordinator of a raft group answers (a follower asks the leader). \
            With an admin token configured, calls that change something need \
            `Authorization: Bearer <token>`; see docs/api.md."
    ),
    paths(openapi_json),
    modifiers(&BearerScheme),
    tags(
        (name = "job", description = "The job and its lifecycle"),
        (name = "checkpoints", description = "Checkpoints and savepoints"),
        (name = "cluster", description = "Coordinators and workers"),
        (name = "operations", description = "Probes and metrics")
    )
)]
struct ApiDoc;

/// Declares the bearer token scheme the protected operations name.
struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every documented route.
fn api_routes() -> OpenApiRouter<Gateway> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(cluster))
        .routes(routes!(job))
        .routes(routes!(stop))
        .routes(routes!(resume))
        .routes(routes!(rescale))
        .routes(routes!(checkpoints, trigger_checkpoint))
        .routes(routes!(set_checkpoint_interval))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// The REST API's OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_routes().into_openapi()
}

/// The REST router, behind the admin token when there is one.
pub fn router(gateway: Gateway, auth: AdminAuth) -> axum::Router {
    let (routes, document) = api_routes().split_for_parts();
    // Written once: it only changes with the binary.
    let document = axum::body::Bytes::from(document.to_json().unwrap_or_else(|e| {
        serde_json::json!({ "error": format!("cannot write the OpenAPI document: {e}") })
            .to_string()
    }));
    crate::dashboard::routes(routes)
        .route(
            OPENAPI_PATH,
            get(move || {
                let document = document.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        document,
                    )
                }
            }),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(gateway)
        .layer(axum::middleware::from_fn_with_state(
            auth,
            crate::auth::require,
        ))
}

/// The coordinators and their workers.
#[utoipa::path(get, path = "/api/v1/cluster", tag = "cluster",
    responses(
        (status = 200, description = "The coordinators and workers", body = api::ClusterStatus),
        (status = 401, description = "Reads need the admin token here", body = ErrorBody),
        (status = 503, description = "No coordinator leads at the moment; try again", body = ErrorBody),
    ))]
async fn cluster(State(h): State<Gateway>) -> Result<Json<api::ClusterStatus>, ApiError> {
    Ok(Json(h.cluster().await?))
}

/// The job: state, generation, throughput, watermarks, partitions.
#[utoipa::path(get, path = "/api/v1/job", tag = "job",
    responses(
        (status = 200, description = "The job's status", body = api::JobStatus),
        (status = 401, description = "Reads need the admin token here", body = ErrorBody),
        (status = 503, description = "No coordinator leads at the moment; try again", body = ErrorBody),
    ))]
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

/// Stops the job: at once, after a final checkpoint, or after a savepoint.
#[utoipa::path(post, path = "/api/v1/job/stop", tag = "job",
    request_body(content = Option<api::StopJobRequest>, content_type = "application/json",
        description = "Empty: stop at once (closed windows are written)."),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The job's status", body = api::JobStatus),
        (status = 400, description = "The body is not a StopJobRequest", body = ErrorBody),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 409, description = "Nothing to stop", body = ErrorBody),
        (status = 503, description = "No coordinator leads at the moment; try again", body = ErrorBody),
    ))]
async fn stop(
    State(h): State<Gateway>,
    bytes: axum::body::Bytes,
) -> Result<Json<api::JobStatus>, ApiError> {
    let request: api::StopJobRequest = body(&bytes)?;
    Ok(Json(h.stop_request(request).await?))
}

/// Resumes a stopped or failed job from its latest completed checkpoint,
/// or from the one named.
#[utoipa::path(post, path = "/api/v1/job/resume", tag = "job",
    request_body(content = Option<api::ResumeJobRequest>, content_type = "application/json",
        description = "Empty: the latest completed checkpoint."),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The job's status", body = api::JobStatus),
        (status = 400, description = "The body is not a ResumeJobRequest, or names no checkpoint of the job", body = ErrorBody),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 409, description = "The job is not stopped or failed", body = ErrorBody),
        (status = 503, description = "No coordinator leads at the moment; try again", body = ErrorBody),
    ))]
async fn resume(
    State(h): State<Gateway>,
    bytes: axum::body::Bytes,
) -> Result<Json<api::JobStatus>, ApiError> {
    let request: api::ResumeJobRequest = body(&bytes)?;
    let from = Some(request.from).filter(|f| !f.trim().is_empty());
    Ok(Json(h.resume(from).await?))
}

/// Runs the job on N workers (on Kubernetes, by patching the workers'
/// StatefulSet's scale).
#[utoipa::path(post, path = "/api/v1/job/rescale", tag = "job",
    request_body(content = api::RescaleRequest, content_type = "application/json"),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The job's status", body = api::JobStatus),
        (status = 400, description = "The body is not a RescaleRequest", body = ErrorBody),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 409, description = "Outside Kubernetes, or the Kubernetes API refused", body = ErrorBody),
        (status = 503, description = "It may work later (no leader, the Kubernetes API unreachable)", body = ErrorBody),
    ))]
async fn rescale(
    State(h): State<Gateway>,
    bytes: axum::body::Bytes,
) -> Result<Json<api::JobStatus>, ApiError> {
    let request: api::RescaleRequest = body(&bytes)?;
    Ok(Json(h.rescale(request.workers).await?))
}

/// The latest checkpoints, newest first, and their totals.
#[utoipa::path(get, path = "/api/v1/checkpoints", tag = "checkpoints",
    responses(
        (status = 200, description = "The latest checkpoints", body = api::CheckpointList),
        (status = 401, description = "Reads need the admin token here", body = ErrorBody),
        (status = 503, description = "No coordinator leads at the moment; try again", body = ErrorBody),
    ))]
async fn checkpoints(State(h): State<Gateway>) -> Result<Json<api::CheckpointList>, ApiError> {
    Ok(Json(h.checkpoints().await?))
}

/// Takes a checkpoint (or a savepoint) now, or once the one in flight ended.
#[utoipa::path(post, path = "/api/v1/checkpoints", tag = "checkpoints",
    request_body(content = Option<api::TriggerCheckpointRequest>, content_type = "application/json",
        description = "Empty: a checkpoint."),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The latest checkpoints", body = api::CheckpointList),
        (status = 400, description = "The body is not a TriggerCheckpointRequest", body = ErrorBody),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 409, description = "The job is not running", body = ErrorBody),
        (status = 503, description = "No coordinator leads at the moment; try again", body = ErrorBody),
    ))]
async fn trigger_checkpoint(
    State(h): State<Gateway>,
    bytes: axum::body::Bytes,
) -> Result<Json<api::CheckpointList>, ApiError> {
    let request: api::TriggerCheckpointRequest = body(&bytes)?;
    Ok(Json(h.trigger_checkpoint(request.savepoint).await?))
}

/// Changes the running job's checkpoint interval (no restart).
#[utoipa::path(put, path = "/api/v1/checkpoints/interval", tag = "checkpoints",
    request_body(content = api::SetCheckpointIntervalRequest, content_type = "application/json"),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The latest checkpoints", body = api::CheckpointList),
        (status = 400, description = "Not a SetCheckpointIntervalRequest, or an interval out of range", body = ErrorBody),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 409, description = "The job is not running", body = ErrorBody),
        (status = 503, description = "No coordinator leads at the moment; try again", body = ErrorBody),
    ))]
async fn set_checkpoint_interval(
    State(h): State<Gateway>,
    bytes: axum::body::Bytes,
) -> Result<Json<api::CheckpointList>, ApiError> {
    let request: api::SetCheckpointIntervalRequest = body(&bytes)?;
    let interval = std::time::Duration::from_millis(request.interval_ms);
    Ok(Json(h.set_checkpoint_interval(interval).await?))
}

/// Liveness: the process serves HTTP. Never needs a token.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "`ok`", content_type = "text/plain", body = String)))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the job's state can be read (from the leader, in a raft
/// group). Never needs a token.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "`ready`", content_type = "text/plain", body = String),
        (status = 503, description = "No coordinator leads at the moment", body = ErrorBody),
    ))]
async fn readyz(State(h): State<Gateway>) -> Result<&'static str, ApiError> {
    h.job().await?;
    Ok("ready\n")
}

/// Prometheus metrics (OpenMetrics text): the job's on the coordinator
/// that runs it, on a follower only that it does not lead. One registry,
/// one exposition per scrape.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "OpenMetrics text exposition", content_type = "application/openmetrics-text", body = String),
        (status = 401, description = "Reads need the admin token here", body = ErrorBody),
    ))]
async fn metrics(State(h): State<Gateway>) -> Result<impl IntoResponse, ApiError> {
    let mut registry = prometheus_client::registry::Registry::default();
    match h.local_handle() {
        Some(local) => {
            let job = local.job().await?;
            let cluster = local.cluster().await?;
            let checkpoints = local.checkpoints().await?;
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            crate::prometheus::register_job(
                &mut registry,
                &job,
                &cluster,
                &checkpoints,
                h.metrics(),
                now_ms,
            );
            crate::prometheus::register_leadership(&mut registry, true, job.raft.as_ref());
        }
        None => {
            crate::prometheus::register_leadership(&mut registry, false, h.raft_status().as_ref())
        }
    }
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            crate::prometheus::CONTENT_TYPE,
        )],
        crate::prometheus::encode(&registry),
    ))
}

/// This document (served by [`router`]; declared here to be in it).
#[utoipa::path(get, path = "/api/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json")))]
#[allow(dead_code)]
async fn openapi_json() {}

async fn not_found(uri: Uri) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!(
            "no such endpoint: {} (see {OPENAPI_PATH} for the API)",
            uri.path()
        ),
    )
}

async fn method_not_allowed(uri: Uri) -> ApiError {
    ApiError(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} does not take this method (reads are GET, actions are POST or PUT; see {OPENAPI_PATH})",
            uri.path()
        ),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use axum::body::Body;
    use axum::http::{Method, Request};
    use proptest::prelude::*;
    use tower::ServiceExt;
    use weir_common::secret::Secret;

    use super::*;
    use crate::auth::Protected;
    use crate::testing::TestCoordinator;

    const TOKEN: &str = "test-token";

    fn app(c: &TestCoordinator) -> axum::Router {
        let auth = AdminAuth::new(Some(Secret::new(TOKEN).expect("token")), Protected::Writes);
        router(Gateway::local(c.handle.clone()), auth)
    }

    async fn send(
        app: &axum::Router,
        method: Method,
        uri: &str,
        authorization: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Vec<u8>) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(a) = authorization {
            request = request.header("authorization", a);
        }
        let request = request.body(Body::from(body)).expect("a request");
        let response = app.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("a body");
        (status, bytes.to_vec())
    }

    /// `(METHOD, path)` of every operation in the document.
    fn documented() -> BTreeSet<(String, String)> {
        let document: serde_json::Value =
            serde_json::from_str(&openapi().to_json().expect("json")).expect("a document");
        let mut operations = BTreeSet::new();
        for (path, item) in document["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("a path item").keys() {
                operations.insert((method.to_uppercase(), path.clone()));
            }
        }
        operations
    }

    #[tokio::test]
    async fn the_document_lists_every_route_and_every_route_answers() {
        let expected: BTreeSet<(String, String)> = [
            ("GET", "/api/v1/cluster"),
            ("GET", "/api/v1/job"),
            ("POST", "/api/v1/job/stop"),
            ("POST", "/api/v1/job/resume"),
            ("POST", "/api/v1/job/rescale"),
            ("GET", "/api/v1/checkpoints"),
            ("POST", "/api/v1/checkpoints"),
            ("PUT", "/api/v1/checkpoints/interval"),
            ("GET", "/healthz"),
            ("GET", "/readyz"),
            ("GET", "/metrics"),
            ("GET", "/api/openapi.json"),
        ]
        .into_iter()
        .map(|(m, p)| (m.to_owned(), p.to_owned()))
        .collect();
        assert_eq!(documented(), expected);

        let c = TestCoordinator::start(|_| {});
        let app = app(&c);
        let bearer = format!("Bearer {TOKEN}");
        for (method, path) in &expected {
            let method = Method::from_bytes(method.as_bytes()).expect("a method");
            let (status, body) = send(&app, method, path, Some(&bearer), Vec::new()).await;
            assert!(
                status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
                "{path}: {status} {}",
                String::from_utf8_lossy(&body)
            );
        }
        let (status, body) = send(&app, Method::GET, OPENAPI_PATH, None, Vec::new()).await;
        assert_eq!(status, StatusCode::OK);
        let served: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(served["openapi"], "3.1.0");
        assert!(served["components"]["schemas"]["JobStatus"].is_object());
        assert!(served["components"]["securitySchemes"]["admin_token"].is_object());
    }

    fn method() -> impl Strategy<Value = Method> {
        prop_oneof![
            Just(Method::GET),
            Just(Method::POST),
            Just(Method::PUT),
            Just(Method::DELETE),
            Just(Method::PATCH),
            Just(Method::HEAD),
            Just(Method::OPTIONS),
        ]
    }

    fn path() -> impl Strategy<Value = String> {
        let known = prop_oneof![
            Just("/api/v1/cluster"),
            Just("/api/v1/job"),
            Just("/api/v1/job/stop"),
            Just("/api/v1/job/resume"),
            Just("/api/v1/job/rescale"),
            Just("/api/v1/checkpoints"),
            Just("/api/v1/checkpoints/interval"),
            Just("/metrics"),
            Just("/readyz"),
            Just("/api/openapi.json"),
        ];
        (
            known,
            prop_oneof![Just(String::new()), "/[a-zA-Z0-9%._~-]{0,12}"],
            prop_oneof![Just(String::new()), "\\?[a-zA-Z0-9=&%+._~-]{0,24}"],
        )
            .prop_map(|(base, extra, query)| format!("{base}{extra}{query}"))
    }

    /// JSON that is almost a request: the right fields with any values,
    /// wrong fields, wrong shapes.
    fn json_body() -> impl Strategy<Value = Vec<u8>> {
        let value = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            ".{0,20}".prop_map(serde_json::Value::from),
            Just(serde_json::json!([1, 2])),
            Just(serde_json::json!({})),
        ];
        let field = prop_oneof![
            Just("savepoint"),
            Just("after_checkpoint"),
            Just("from"),
            Just("workers"),
            Just("interval_ms"),
            Just("unknown"),
        ];
        proptest::collection::btree_map(field, value, 0..3)
            .prop_map(|fields| serde_json::to_vec(&fields).expect("JSON"))
    }

    fn body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(Vec::new()),
            json_body(),
            proptest::collection::vec(any::<u8>(), 0..64),
        ]
    }

    fn authorization() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(None),
            Just(Some(format!("Bearer {TOKEN}"))),
            "[ -~]{0,20}".prop_map(Some),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        /// Whatever arrives, the API answers: no panic, no 5xx (the actor
        /// is alive), and every refusal a JSON message.
        #[test]
        fn any_request_gets_an_answer_never_a_server_error(
            method in method(),
            path in path(),
            authorization in authorization(),
            body in body(),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                let c = TestCoordinator::start(|_| {});
                let app = app(&c);
                let head = method == Method::HEAD;
                let (status, answer) = send(&app, method, &path, authorization.as_deref(), body).await;
                prop_assert!(
                    !status.is_server_error(),
                    "{path}: {status} {}",
                    String::from_utf8_lossy(&answer)
                );
                if status.is_client_error() && !head {
                    let error: serde_json::Value = serde_json::from_slice(&answer)
                        .map_err(|e| TestCaseError::fail(format!("{path}: {status}: not JSON ({e})")))?;
                    prop_assert!(
                        error["error"].as_str().is_some_and(|m| !m.is_empty()),
                        "{path}: {status} {error}"
                    );
                }
                Ok(())
            })?;
        }
    }
}
