//! Server-to-Server OAuth (SPEC 3.1): client credentials of an account for a bearer token.
//! Errors here use the OAuth body (`{"error", "reason"}`), not the catalogue.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use qss_store::hash_secret;
use serde::Serialize;
use serde_json::json;

use crate::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new().route("/oauth/token", post(token))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenOut {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub scope: String,
    pub api_url: String,
}

fn oauth_error(status: StatusCode, error: &str, reason: &str) -> Response {
    (status, Json(json!({"error": error, "reason": reason}))).into_response()
}

pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_string(), secret.to_string()))
}

/// Exchanges client credentials for an access token.
#[utoipa::path(post, path = "/oauth/token", tag = "oauth",
    params(("grant_type" = String, Query, description = "account_credentials"), ("account_id" = String, Query)),
    responses((status = 200, body = TokenOut), (status = 400, description = "OAuth error body"), (status = 401, description = "invalid_client")))]
pub async fn token(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some((client_id, secret)) = basic_credentials(&headers) else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Invalid client_id or client_secret",
        );
    };
    let mut params: HashMap<String, String> =
        query.as_deref().map(form_urlencoded).unwrap_or_default();
    let is_form =
        crate::body::media_type(&headers).as_deref() == Some("application/x-www-form-urlencoded");
    if let Ok(bytes) = crate::body::read_limited(&headers, body, 64 * 1024).await
        && is_form
        && let Ok(text) = std::str::from_utf8(&bytes)
    {
        params.extend(form_urlencoded(text));
    }
    let Some(grant) = params.get("grant_type") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing parameter: grant_type",
        );
    };
    if grant != "account_credentials" {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Unsupported grant type; use account_credentials",
        );
    }
    let Some(account_id) = params.get("account_id").cloned() else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing parameter: account_id",
        );
    };
    let verified = state
        .store
        .verify_client(&account_id, &client_id, &hash_secret(&secret))
        .await;
    let scopes = match verified {
        Ok(Some(scopes)) => scopes,
        Ok(None) => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "Invalid client_id or client_secret",
            );
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    match issue(&state, &account_id, &client_id, scopes).await {
        Ok(out) => Json(out).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Stores a new access token for an account (its hash only) and answers it. Shared with the
/// operator's `POST /admin/accounts/{id}/tokens`.
pub async fn issue(
    state: &AppState,
    account_id: &str,
    client_id: &str,
    scopes: String,
) -> Result<TokenOut, ApiError> {
    let access_token = qss_domain::ids::random_secret();
    let ttl = state.config.token_ttl_seconds;
    let expires_at = state.clock.now_ms() + ttl as i64 * 1000;
    state
        .store
        .insert_token(
            &hash_secret(&access_token),
            account_id,
            client_id,
            &scopes,
            expires_at,
        )
        .await?;
    Ok(TokenOut {
        access_token,
        token_type: "bearer",
        expires_in: ttl,
        scope: scopes,
        api_url: state.config.public_url.clone(),
    })
}

/// Decodes `a=b&c=d`; a malformed string gives no parameters.
fn form_urlencoded(s: &str) -> HashMap<String, String> {
    serde_urlencoded::from_str(s).unwrap_or_default()
}
