//! The web dashboard: a page and its script, served from the binary at `/`.
//!
//! The assets are compiled in (`include_str!`), the chart library (uPlot,
//! MIT, `dashboard/vendor/`) with them: the dashboard works in an
//! air-gapped cluster with no CDN. The page holds no data; its script
//! reads the REST API like any client (sending the admin token the user
//! typed when the API wants one), so the assets are open even where reads
//! need the token, and every action goes through the API's own checks.

use axum::http::{header, HeaderName, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::get;

/// The page's own policy: scripts and styles from the coordinator only,
/// never framed (its buttons stop jobs), never sniffed.
const SECURITY_HEADERS: [(HeaderName, &str); 4] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    ),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::CACHE_CONTROL, "no-cache"),
];

const ASSETS: [(&str, &str, &str); 5] = [
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../dashboard/index.html"),
    ),
    (
        "/ui/app.js",
        "text/javascript; charset=utf-8",
        include_str!("../dashboard/app.js"),
    ),
    (
        "/ui/style.css",
        "text/css; charset=utf-8",
        include_str!("../dashboard/style.css"),
    ),
    (
        "/ui/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_str!("../dashboard/vendor/uPlot.iife.min.js"),
    ),
    (
        "/ui/uPlot.min.css",
        "text/css; charset=utf-8",
        include_str!("../dashboard/vendor/uPlot.min.css"),
    ),
];

/// Whether `path` is one of the dashboard's assets (open to everyone).
pub fn is_asset(path: &str) -> bool {
    ASSETS.iter().any(|(p, _, _)| *p == path)
}

/// The dashboard's routes.
pub fn routes<S: Clone + Send + Sync + 'static>(mut router: axum::Router<S>) -> axum::Router<S> {
    for (path, content_type, body) in ASSETS {
        router = router.route(
            path,
            get(move || async move {
                let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
                for (name, value) in SECURITY_HEADERS {
                    response
                        .headers_mut()
                        .insert(name, HeaderValue::from_static(value));
                }
                response
            }),
        );
    }
    router
}
