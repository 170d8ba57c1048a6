//! Webhook subscriptions (SPEC 7.1) and the URL validation handshake (7.2), under
//! `/v2/accounts/{accountId}/qss/webhooks`. The delivery log is in `deliveries`.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use qss_domain::timefmt::format_ms;
use qss_domain::{EventType, ValidationErrors};
use qss_store::{MAX_WEBHOOKS, WebhookRecord};
use serde::Serialize;
use serde_json::Value;

use crate::auth::{SCOPE_READ, SCOPE_WRITE, authorize};
use crate::{ApiError, AppState};

const BODY_LIMIT: usize = 64 * 1024;
const ROTATION_OVERLAP_MS: i64 = 24 * 3_600_000;

pub fn router() -> Router<AppState> {
    let base = "/v2/accounts/{account_id}/qss/webhooks";
    Router::new()
        .route(base, get(list_webhooks).post(create_webhook))
        .route(
            &format!("{base}/{{webhook_id}}"),
            get(get_webhook).patch(patch_webhook).delete(delete_webhook),
        )
        .route(
            &format!("{base}/{{webhook_id}}/validate"),
            post(validate_webhook),
        )
        .route(
            &format!("{base}/{{webhook_id}}/rotate_secret"),
            post(rotate_secret),
        )
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookOut {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub status: String,
    pub description: Option<String>,
    pub max_age_seconds: Option<i64>,
    pub created_at: String,
    pub validated_at: Option<String>,
    /// Only when the subscription is created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_token: Option<String>,
}

impl From<&WebhookRecord> for WebhookOut {
    fn from(w: &WebhookRecord) -> Self {
        WebhookOut {
            id: w.webhook_id.clone(),
            url: w.url.clone(),
            events: w.events.clone(),
            status: w.status.clone(),
            description: w.description.clone(),
            max_age_seconds: w.max_age_seconds,
            created_at: format_ms(w.created_at),
            validated_at: w.validated_at.map(format_ms),
            secret_token: None,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookListOut {
    pub webhooks: Vec<WebhookOut>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SecretOut {
    pub secret_token: String,
}

/// The writable fields of a subscription, validated.
#[derive(Debug, Default)]
struct WebhookFields {
    url: Option<String>,
    events: Option<Vec<String>>,
    secret_token: Option<String>,
    description: Option<Option<String>>,
    max_age_seconds: Option<Option<i64>>,
    status: Option<String>,
}

fn parse_events(v: &Value, errors: &mut ValidationErrors) -> Option<Vec<String>> {
    let Some(items) = v.as_array().filter(|a| !a.is_empty()) else {
        errors.push("events", "must be a non-empty array of event types");
        return None;
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item.as_str().and_then(EventType::parse) {
            Some(t) => out.push(t),
            None => errors.push(format!("events[{i}]"), "unknown event type"),
        }
    }
    out.sort();
    out.dedup();
    Some(out.into_iter().map(|t| t.as_str().to_string()).collect())
}

fn parse_fields(
    v: &Value,
    allow_private: bool,
    creating: bool,
) -> Result<WebhookFields, ValidationErrors> {
    let mut errors = ValidationErrors::new();
    let Some(obj) = v.as_object() else {
        return Err(ValidationErrors::single(
            "",
            "the body must be a JSON object",
        ));
    };
    let mut f = WebhookFields::default();
    match obj.get("url") {
        Some(Value::String(u)) => match qss_delivery::address::check_url(u, allow_private) {
            Ok(_) => f.url = Some(u.clone()),
            Err(e) => errors.push("url", e.to_string()),
        },
        None if !creating => {}
        _ => errors.push("url", "must be an absolute https URL"),
    }
    match obj.get("events") {
        Some(v) => f.events = parse_events(v, &mut errors),
        None if !creating => {}
        None => errors.push("events", "is required"),
    }
    if creating {
        match parse_secret(obj.get("secret_token")) {
            Ok(secret) => f.secret_token = secret,
            Err(message) => errors.push("secret_token", message),
        }
    }
    match obj.get("description") {
        None => {}
        Some(Value::Null) => f.description = Some(None),
        Some(Value::String(s)) if s.chars().count() <= 1024 => {
            f.description = Some(Some(s.clone()))
        }
        Some(_) => errors.push("description", "must be a string of at most 1024 characters"),
    }
    match obj.get("max_age_seconds") {
        None => {}
        Some(Value::Null) => f.max_age_seconds = Some(None),
        Some(v) => match v.as_i64().filter(|n| (60..=604_800).contains(n)) {
            Some(n) => f.max_age_seconds = Some(Some(n)),
            None => errors.push(
                "max_age_seconds",
                "must be an integer between 60 and 604800",
            ),
        },
    }
    if !creating {
        match obj.get("status") {
            None => {}
            Some(Value::String(s)) if s == "active" || s == "paused" => f.status = Some(s.clone()),
            Some(_) => errors.push("status", "must be active or paused"),
        }
    }
    errors.into_result(f)
}

/// A given `secret_token` (SPEC 7.1): 16..256 printable ASCII characters; `None` when absent.
fn parse_secret(v: Option<&Value>) -> Result<Option<String>, &'static str> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s))
            if (16..=256).contains(&s.len()) && s.bytes().all(|b| (0x20..0x7f).contains(&b)) =>
        {
            Ok(Some(s.clone()))
        }
        Some(_) => Err("must be 16 to 256 printable ASCII characters"),
    }
}

pub(crate) async fn existing(
    state: &AppState,
    account_id: &str,
    webhook_id: &str,
) -> Result<WebhookRecord, ApiError> {
    state
        .store
        .get_webhook(account_id, webhook_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("Webhook {webhook_id} does not exist.")))
}

/// The secrets a handshake answer may be made with: the current one, and the previous one
/// during its overlap.
fn accepted_secrets(w: &WebhookRecord, now: i64) -> Vec<String> {
    let mut s = vec![w.secret.clone()];
    if let (Some(p), Some(until)) = (&w.previous_secret, w.previous_secret_until)
        && now < until
    {
        s.push(p.clone());
    }
    s
}

/// Runs the URL validation handshake (SPEC 7.2); the error is the reason shown to the user.
pub async fn handshake(
    state: &AppState,
    url: &str,
    signing_secret: &str,
    accepted: &[String],
) -> Result<(), String> {
    let accepted: Vec<&str> = accepted.iter().map(String::as_str).collect();
    qss_delivery::handshake(
        &state.webhook_client,
        url,
        signing_secret,
        &accepted,
        Duration::from_millis(state.config.webhook_timeout_ms),
        state.clock.now_ms(),
        env!("CARGO_PKG_VERSION"),
    )
    .await
}

/// Refuses a URL whose host resolves to an address that is not globally reachable (SPEC 7.4:
/// checked at creation and on a URL change, and again on every connection).
async fn check_resolved_host(state: &AppState, url: &str) -> Result<(), ApiError> {
    let parsed = qss_delivery::check_url(url, state.config.webhook_allow_private_networks)
        .map_err(|e| ApiError::invalid("url", e.to_string()))?;
    state
        .webhook_client
        .check_resolved_host(&parsed)
        .await
        .map_err(|e| ApiError::invalid("url", e.to_string()))
}

/// Tells the dispatcher that a subscription changed (its cached copies are stale).
pub(crate) fn changed(state: &AppState) {
    state
        .webhooks_version
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

/// Records a passed handshake: the next one is due a period later, failures are forgotten,
/// and a subscription waiting for validation becomes active.
fn mark_validated(state: &AppState, w: &mut WebhookRecord, now: i64) {
    w.validated_at = Some(now);
    w.next_validation_at = Some(revalidate_at(state, now));
    w.validation_failures = 0;
    if w.status == "pending_validation" {
        w.status = "active".to_string();
    }
}

fn revalidate_at(state: &AppState, now: i64) -> i64 {
    now + state.config.webhook_revalidate_hours as i64 * 3_600_000
}

#[utoipa::path(post, path = "/v2/accounts/{account_id}/qss/webhooks", tag = "webhooks",
    security(("bearer" = ["qss:write"])), params(("account_id" = String, Path)),
    request_body(content = crate::schemas::WebhookCreate),
    responses((status = 201, body = WebhookOut), (status = 400, body = crate::openapi::ErrorBody),
        (status = 401, body = crate::openapi::ErrorBody), (status = 403, body = crate::openapi::ErrorBody),
        (status = 409, body = crate::openapi::ErrorBody), (status = 415, body = crate::openapi::ErrorBody)))]
pub async fn create_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(account_id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &account_id, SCOPE_WRITE, true).await?;
    let v = crate::body::read_json(&headers, body, BODY_LIMIT, false).await?;
    let f = parse_fields(&v, state.config.webhook_allow_private_networks, true)?;
    let (url, events) = (f.url.expect("validated"), f.events.expect("validated"));
    check_resolved_host(&state, &url).await?;
    if state.store.list_webhooks(&account_id).await?.len() as i64 >= MAX_WEBHOOKS {
        return Err(ApiError::Conflict(format!(
            "An account has at most {MAX_WEBHOOKS} webhooks."
        )));
    }
    let now = state.clock.now_ms();
    let (secret, status, validated_at) = match f.secret_token {
        Some(secret) => {
            handshake(&state, &url, &secret, std::slice::from_ref(&secret))
                .await
                .map_err(|reason| ApiError::invalid("url", reason))?;
            (secret, "active", Some(now))
        }
        None => (
            qss_delivery::signing::generate_secret(),
            "pending_validation",
            None,
        ),
    };
    let record = WebhookRecord {
        account_id: account_id.clone(),
        webhook_id: format!(
            "wh_{}",
            qss_domain::ids::random_string(b"abcdefghijklmnopqrstuvwxyz0123456789", 22)
        ),
        url,
        events,
        secret: secret.clone(),
        previous_secret: None,
        previous_secret_until: None,
        status: status.to_string(),
        description: f.description.flatten(),
        max_age_seconds: f.max_age_seconds.flatten(),
        created_at: now,
        validated_at,
        next_validation_at: validated_at.map(|v| revalidate_at(&state, v)),
        validation_failures: 0,
    };
    if !state.store.insert_webhook(&record).await? {
        return Err(ApiError::Conflict(format!(
            "An account has at most {MAX_WEBHOOKS} webhooks."
        )));
    }
    let mut out = WebhookOut::from(&record);
    out.secret_token = Some(secret);
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

#[utoipa::path(get, path = "/v2/accounts/{account_id}/qss/webhooks", tag = "webhooks",
    security(("bearer" = ["qss:read"])), params(("account_id" = String, Path)),
    responses((status = 200, body = WebhookListOut), (status = 401, body = crate::openapi::ErrorBody),
        (status = 403, body = crate::openapi::ErrorBody)))]
pub async fn list_webhooks(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(account_id): Path<String>,
) -> Result<Json<WebhookListOut>, ApiError> {
    authorize(&state, &headers, &account_id, SCOPE_READ, true).await?;
    let rows = state.store.list_webhooks(&account_id).await?;
    Ok(Json(WebhookListOut {
        webhooks: rows.iter().map(WebhookOut::from).collect(),
    }))
}

#[utoipa::path(get, path = "/v2/accounts/{account_id}/qss/webhooks/{webhook_id}", tag = "webhooks",
    security(("bearer" = ["qss:read"])), params(("account_id" = String, Path), ("webhook_id" = String, Path)),
    responses((status = 200, body = WebhookOut), (status = 401, body = crate::openapi::ErrorBody),
        (status = 403, body = crate::openapi::ErrorBody), (status = 404, body = crate::openapi::ErrorBody)))]
pub async fn get_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((account_id, webhook_id)): Path<(String, String)>,
) -> Result<Json<WebhookOut>, ApiError> {
    authorize(&state, &headers, &account_id, SCOPE_READ, true).await?;
    let w = existing(&state, &account_id, &webhook_id).await?;
    Ok(Json(WebhookOut::from(&w)))
}

#[utoipa::path(patch, path = "/v2/accounts/{account_id}/qss/webhooks/{webhook_id}", tag = "webhooks",
    security(("bearer" = ["qss:write"])), params(("account_id" = String, Path), ("webhook_id" = String, Path)),
    request_body(content = crate::schemas::WebhookPatch),
    responses((status = 200, body = WebhookOut), (status = 400, body = crate::openapi::ErrorBody),
        (status = 401, body = crate::openapi::ErrorBody), (status = 403, body = crate::openapi::ErrorBody),
        (status = 404, body = crate::openapi::ErrorBody)))]
pub async fn patch_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((account_id, webhook_id)): Path<(String, String)>,
    body: Body,
) -> Result<Json<WebhookOut>, ApiError> {
    authorize(&state, &headers, &account_id, SCOPE_WRITE, true).await?;
    let v = crate::body::read_json(&headers, body, BODY_LIMIT, false).await?;
    let f = parse_fields(&v, state.config.webhook_allow_private_networks, false)?;
    let mut w = existing(&state, &account_id, &webhook_id).await?;
    let now = state.clock.now_ms();
    let url_changed = f.url.as_ref().is_some_and(|u| *u != w.url);
    let activating = f.status.as_deref() == Some("active") && w.status != "active";
    if url_changed {
        check_resolved_host(&state, f.url.as_deref().unwrap_or_default()).await?;
    }
    if let Some(url) = f.url {
        w.url = url;
    }
    if url_changed || activating {
        handshake(&state, &w.url, &w.secret, &accepted_secrets(&w, now))
            .await
            .map_err(|reason| ApiError::invalid("url", reason))?;
        mark_validated(&state, &mut w, now);
        if activating {
            w.status = "active".to_string();
        }
    }
    if let Some(e) = f.events {
        w.events = e;
    }
    if let Some(d) = f.description {
        w.description = d;
    }
    if let Some(m) = f.max_age_seconds {
        w.max_age_seconds = m;
    }
    if f.status.as_deref() == Some("paused") {
        w.status = "paused".to_string();
    }
    if !state.store.update_webhook(&w).await? {
        return Err(ApiError::NotFound(format!(
            "Webhook {webhook_id} does not exist."
        )));
    }
    changed(&state);
    state.delivery_wake.notify_one();
    Ok(Json(WebhookOut::from(&w)))
}

#[utoipa::path(delete, path = "/v2/accounts/{account_id}/qss/webhooks/{webhook_id}", tag = "webhooks",
    security(("bearer" = ["qss:write"])), params(("account_id" = String, Path), ("webhook_id" = String, Path)),
    responses((status = 204, description = "Deleted; its pending deliveries are cancelled"),
        (status = 401, body = crate::openapi::ErrorBody), (status = 403, body = crate::openapi::ErrorBody),
        (status = 404, body = crate::openapi::ErrorBody)))]
pub async fn delete_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((account_id, webhook_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    authorize(&state, &headers, &account_id, SCOPE_WRITE, true).await?;
    if !state.store.delete_webhook(&account_id, &webhook_id).await? {
        return Err(ApiError::NotFound(format!(
            "Webhook {webhook_id} does not exist."
        )));
    }
    changed(&state);
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v2/accounts/{account_id}/qss/webhooks/{webhook_id}/validate", tag = "webhooks",
    security(("bearer" = ["qss:write"])), params(("account_id" = String, Path), ("webhook_id" = String, Path)),
    responses((status = 200, body = WebhookOut), (status = 400, body = crate::openapi::ErrorBody),
        (status = 401, body = crate::openapi::ErrorBody), (status = 403, body = crate::openapi::ErrorBody),
        (status = 404, body = crate::openapi::ErrorBody)))]
pub async fn validate_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((account_id, webhook_id)): Path<(String, String)>,
) -> Result<Json<WebhookOut>, ApiError> {
    authorize(&state, &headers, &account_id, SCOPE_WRITE, true).await?;
    let mut w = existing(&state, &account_id, &webhook_id).await?;
    let now = state.clock.now_ms();
    handshake(&state, &w.url, &w.secret, &accepted_secrets(&w, now))
        .await
        .map_err(|reason| ApiError::invalid("url", reason))?;
    mark_validated(&state, &mut w, now);
    state.store.update_webhook(&w).await?;
    changed(&state);
    state.delivery_wake.notify_one();
    Ok(Json(WebhookOut::from(&w)))
}

#[utoipa::path(post, path = "/v2/accounts/{account_id}/qss/webhooks/{webhook_id}/rotate_secret", tag = "webhooks",
    security(("bearer" = ["qss:write"])), params(("account_id" = String, Path), ("webhook_id" = String, Path)),
    request_body(content = Option<crate::schemas::RotateSecretIn>),
    responses((status = 200, body = SecretOut), (status = 400, body = crate::openapi::ErrorBody),
        (status = 401, body = crate::openapi::ErrorBody), (status = 403, body = crate::openapi::ErrorBody),
        (status = 404, body = crate::openapi::ErrorBody)))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((account_id, webhook_id)): Path<(String, String)>,
    body: Body,
) -> Result<Json<SecretOut>, ApiError> {
    authorize(&state, &headers, &account_id, SCOPE_WRITE, true).await?;
    let v = crate::body::read_json(&headers, body, BODY_LIMIT, true).await?;
    let secret = parse_secret(v.get("secret_token"))
        .map_err(|m| ApiError::invalid("secret_token", m))?
        .unwrap_or_else(qss_delivery::signing::generate_secret);
    let mut w = existing(&state, &account_id, &webhook_id).await?;
    let now = state.clock.now_ms();
    w.previous_secret = Some(std::mem::replace(&mut w.secret, secret.clone()));
    w.previous_secret_until = Some(now + ROTATION_OVERLAP_MS);
    state.store.update_webhook(&w).await?;
    changed(&state);
    Ok(Json(SecretOut {
        secret_token: secret,
    }))
}
