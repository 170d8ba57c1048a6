//! The error catalogue of SPEC 2 and the one place where errors become status codes. Every
//! error response, including the framework's own (unknown route, wrong method, panics), has
//! the JSON body `{"code", "message"}`; 5xx bodies never carry internal details.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use qss_domain::ValidationErrors;
use qss_store::StoreError;
use serde_json::json;

#[derive(Debug)]
pub enum ApiError {
    /// 401/124.
    InvalidToken,
    /// 401/124, expired.
    ExpiredToken,
    /// 403/200.
    NoPermission(&'static str),
    /// 403/4711, naming the scope.
    MissingScope(&'static str),
    /// 404/3001, naming what is missing.
    NotFound(String),
    /// 409/409.
    Conflict(String),
    /// 413/300.
    TooLarge(String),
    /// 415/300.
    UnsupportedMedia(String),
    /// 400/300.
    Validation(ValidationErrors),
    /// 503/503 with Retry-After seconds.
    Unavailable(u64),
    /// 500/500; the cause is logged, never sent.
    Internal(String),
}

impl ApiError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        ApiError::Validation(ValidationErrors::single(field, message))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "database unavailable");
            ApiError::Unavailable(1)
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

impl From<ValidationErrors> for ApiError {
    fn from(e: ValidationErrors) -> Self {
        ApiError::Validation(e)
    }
}

fn body(status: StatusCode, code: u16, message: &str) -> Response {
    (status, Json(json!({"code": code, "message": message}))).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::InvalidToken => body(StatusCode::UNAUTHORIZED, 124, "Invalid access token."),
            ApiError::ExpiredToken => {
                body(StatusCode::UNAUTHORIZED, 124, "Access token is expired.")
            }
            ApiError::NoPermission(why) => body(StatusCode::FORBIDDEN, 200, why),
            ApiError::MissingScope(scope) => body(
                StatusCode::FORBIDDEN,
                4711,
                &format!("Invalid access token, does not contain scopes:[{scope}]."),
            ),
            ApiError::NotFound(what) => body(StatusCode::NOT_FOUND, 3001, &what),
            ApiError::Conflict(what) => body(StatusCode::CONFLICT, 409, &what),
            ApiError::TooLarge(what) => body(StatusCode::PAYLOAD_TOO_LARGE, 300, &what),
            ApiError::UnsupportedMedia(what) => {
                body(StatusCode::UNSUPPORTED_MEDIA_TYPE, 300, &what)
            }
            ApiError::Validation(errors) => (
                StatusCode::BAD_REQUEST,
                Json(json!({"code": 300, "message": errors.message(), "errors": errors.errors})),
            )
                .into_response(),
            ApiError::Unavailable(secs) => {
                let mut r = body(
                    StatusCode::SERVICE_UNAVAILABLE,
                    503,
                    "Service temporarily unavailable, retry later.",
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
                r
            }
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                body(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    500,
                    "Internal server error.",
                )
            }
        }
    }
}

/// Unknown routes (404/3001).
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("No such route: {}.", uri.path()))
}

/// Gives the framework's own error responses (405 with its `Allow` header, extractor
/// rejections in plain text) the catalogue's JSON body.
pub async fn json_for_empty_errors(mut response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (code, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => (405, "Method not allowed.".to_string()),
        StatusCode::NOT_FOUND => (3001, "Not found.".to_string()),
        StatusCode::PAYLOAD_TOO_LARGE => (300, "Request body too large.".to_string()),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (300, "Unsupported media type.".to_string()),
        s if s.is_server_error() => (500, "Internal server error.".to_string()),
        StatusCode::BAD_REQUEST => {
            let bytes = http_body_util::BodyExt::collect(std::mem::take(response.body_mut()))
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let bytes = serde_json::to_vec(&json!({"code": 300, "message": "Validation Failed.",
                "errors": [{"field": "", "message": text}]}))
            .unwrap_or_default();
            return replace_body(response, bytes);
        }
        s => (
            300,
            s.canonical_reason().unwrap_or("Bad request").to_string(),
        ),
    };
    let bytes = serde_json::to_vec(&json!({"code": code, "message": message})).unwrap_or_default();
    replace_body(response, bytes)
}

fn replace_body(mut response: Response, bytes: Vec<u8>) -> Response {
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response.headers_mut().remove(header::CONTENT_LENGTH);
    *response.body_mut() = axum::body::Body::from(bytes);
    response
}

/// A handler panicked: log it, answer 500 without details, keep serving.
pub fn panic_response(_err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    body(
        StatusCode::INTERNAL_SERVER_ERROR,
        500,
        "Internal server error.",
    )
}
