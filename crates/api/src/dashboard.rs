//! The web dashboard (issue 6): a page at `/` and its assets under `/dashboard/`, embedded in
//! the binary, so it works offline with no build step. The page holds no data and no secret:
//! it signs in with an account's client credentials through `/oauth/token`, or as the operator
//! (the admin token lists the accounts, `POST /admin/accounts/{id}/tokens` gives a token of the
//! chosen one), keeps tokens and secrets in memory only, and reads everything through the same
//! `/v2` API as any client, so it sees exactly what that token may see.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::AppState;

/// Scripts, styles and connections from this origin only; no frames, no inline code.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// `(name, content type, bytes)` of every asset.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/dashboard/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/dashboard/app.css"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/dashboard/vendor/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/dashboard/vendor/uPlot.min.css"),
    ),
    (
        "uPlot-LICENSE",
        "text/plain; charset=utf-8",
        include_bytes!("../assets/dashboard/vendor/uPlot-LICENSE"),
    ),
];

const INDEX: &str = include_str!("../assets/dashboard/index.html");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/dashboard/{name}", get(asset))
}

async fn index() -> Response {
    with_headers(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response())
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, bytes)) => {
            with_headers(([(header::CONTENT_TYPE, *content_type)], *bytes).into_response())
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn with_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}
