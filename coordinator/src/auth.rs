//! Who may use the admin API: a bearer token for every call that changes
//! something, and — when `reads` says so — for the calls that only look.
//!
//! The token comes from the environment (`--admin-token-env`, by default
//! `WEIR_ADMIN_TOKEN`; on Kubernetes a Secret), never from the job spec or
//! a flag's value, so it is in no process listing, log or `weir spec`
//! output. Without a token the API is open, as before (a laptop, `weir
//! local`). `/healthz` and `/readyz` are always open: the kubelet probes
//! them without credentials.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::Status;
use weir_common::secret::Secret;

/// What a call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads the job's state (status, checkpoints, metrics).
    Read,
    /// Changes it (stop, resume, rescale, checkpoints, interval).
    Write,
}

/// Which calls need the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protected {
    /// Only calls that change something (reads stay open for dashboards
    /// and scrapers inside the cluster).
    #[default]
    Writes,
    /// Every call but the health probes.
    Everything,
}

/// The admin API's authentication.
#[derive(Debug, Clone, Default)]
pub struct AdminAuth {
    token: Option<Secret>,
    protected: Protected,
}

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Wrong,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Missing => {
                "this call needs the admin token: send `Authorization: Bearer <token>` (weir ctl reads it from WEIR_ADMIN_TOKEN)"
            }
            Refusal::Wrong => "the admin token is wrong",
        }
    }
}

impl AdminAuth {
    /// An open API: nothing checked.
    pub fn open() -> Self {
        AdminAuth::default()
    }

    pub fn new(token: Option<Secret>, protected: Protected) -> Self {
        AdminAuth { token, protected }
    }

    pub fn token(&self) -> Option<&Secret> {
        self.token.as_ref()
    }

    fn needs_token(&self, access: Access) -> Option<&Secret> {
        let token = self.token.as_ref()?;
        match (access, self.protected) {
            (Access::Read, Protected::Writes) => None,
            _ => Some(token),
        }
    }

    /// Whether `authorization` (the header's value, if sent) allows a call
    /// with `access`.
    pub fn check(&self, access: Access, authorization: Option<&[u8]>) -> Result<(), Refusal> {
        let Some(token) = self.needs_token(access) else {
            return Ok(());
        };
        let offered = authorization.ok_or(Refusal::Missing)?;
        // RFC 6750: the scheme is case-insensitive.
        let bearer = offered
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
            .and_then(|_| offered.get(7..))
            .ok_or(Refusal::Wrong)?;
        if token.matches(bearer.trim_ascii()) {
            Ok(())
        } else {
            Err(Refusal::Wrong)
        }
    }

    /// The gRPC check: `UNAUTHENTICATED` without the token.
    pub fn check_grpc(&self, access: Access, metadata: &MetadataMap) -> Result<(), Status> {
        let offered = metadata.get("authorization").map(|v| v.as_bytes());
        self.check(access, offered)
            .map_err(|r| Status::unauthenticated(r.message()))
    }

    /// The `authorization` value a follower sends when it proxies a call
    /// it authorized to the leader.
    pub fn bearer(&self) -> Option<AsciiMetadataValue> {
        self.token
            .as_ref()
            .and_then(|t| format!("Bearer {}", t.expose()).parse().ok())
    }
}

/// What a REST call does: health probes need nothing, reads (GET, HEAD)
/// read, and anything else writes.
fn rest_access(method: &Method, path: &str) -> Option<Access> {
    let read = method == Method::GET || method == Method::HEAD || method == Method::OPTIONS;
    // Probes, and the dashboard's page and script (which hold no data).
    if path == "/healthz" || path == "/readyz" || (read && crate::dashboard::is_asset(path)) {
        return None;
    }
    if read {
        Some(Access::Read)
    } else {
        Some(Access::Write)
    }
}

/// The REST middleware: 401 with `WWW-Authenticate: Bearer` and a JSON
/// message when the call needs the token and lacks it.
pub async fn require(State(auth): State<AdminAuth>, request: Request, next: Next) -> Response {
    if let Some(access) = rest_access(request.method(), request.uri().path()) {
        let offered = authorization(request.headers());
        if let Err(refusal) = auth.check(access, offered) {
            let mut response = (
                StatusCode::UNAUTHORIZED,
                axum::Json(serde_json::json!({ "error": refusal.message() })),
            )
                .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"weir\""),
            );
            return response;
        }
    }
    next.run(request).await
}

fn authorization(headers: &HeaderMap) -> Option<&[u8]> {
    headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(protected: Protected) -> AdminAuth {
        AdminAuth::new(Some(Secret::new("t0ken").expect("secret")), protected)
    }

    #[test]
    fn writes_need_the_token_and_reads_only_when_asked() {
        let a = auth(Protected::Writes);
        assert_eq!(a.check(Access::Write, None), Err(Refusal::Missing));
        assert_eq!(
            a.check(Access::Write, Some(b"Bearer nope")),
            Err(Refusal::Wrong)
        );
        assert_eq!(a.check(Access::Write, Some(b"t0ken")), Err(Refusal::Wrong));
        assert_eq!(
            a.check(Access::Write, Some(b"Basic t0ken")),
            Err(Refusal::Wrong)
        );
        assert_eq!(a.check(Access::Write, Some(b"Bearer t0ken")), Ok(()));
        assert_eq!(a.check(Access::Write, Some(b"bearer t0ken")), Ok(()));
        assert_eq!(a.check(Access::Read, None), Ok(()));

        let a = auth(Protected::Everything);
        assert_eq!(a.check(Access::Read, None), Err(Refusal::Missing));
        assert_eq!(a.check(Access::Read, Some(b"Bearer t0ken")), Ok(()));
    }

    #[test]
    fn without_a_token_everything_is_open() {
        let a = AdminAuth::open();
        assert_eq!(a.check(Access::Write, None), Ok(()));
        assert_eq!(a.check(Access::Write, Some(b"Bearer whatever")), Ok(()));
    }

    #[test]
    fn probes_are_always_open() {
        assert_eq!(rest_access(&Method::GET, "/healthz"), None);
        assert_eq!(rest_access(&Method::GET, "/readyz"), None);
        assert_eq!(rest_access(&Method::GET, "/"), None);
        assert_eq!(rest_access(&Method::GET, "/ui/app.js"), None);
        assert_eq!(rest_access(&Method::POST, "/"), Some(Access::Write));
        assert_eq!(rest_access(&Method::GET, "/metrics"), Some(Access::Read));
        assert_eq!(
            rest_access(&Method::POST, "/api/v1/job/stop"),
            Some(Access::Write)
        );
        assert_eq!(
            rest_access(&Method::DELETE, "/anything"),
            Some(Access::Write)
        );
    }

    #[test]
    fn a_refusal_does_not_repeat_the_token() {
        let a = auth(Protected::Writes);
        let status = a
            .check_grpc(Access::Write, &MetadataMap::new())
            .expect_err("refused");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(!status.message().contains("t0ken"));
        assert!(!format!("{a:?}").contains("t0ken"));
    }
}
