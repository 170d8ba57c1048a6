//! The delivery log of a subscription, retry and replay (SPEC 7.5), under
//! `/v2/accounts/{accountId}/qss/webhooks/{webhookId}`.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use qss_domain::timefmt::{format_ms, parse_bound};
use qss_domain::{EventType, ValidationErrors};
use qss_store::{AttemptRow, DeliveryRecord};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::admin::parse_page_size;
use crate::auth::{SCOPE_READ, SCOPE_WRITE, authorize};
use crate::webhooks::existing;
use crate::{ApiError, AppState};

const BODY_LIMIT: usize = 64 * 1024;
const MAX_REPLAY: i64 = 100_000;

pub fn router() -> Router<AppState> {
    let base = "/v2/accounts/{account_id}/qss/webhooks/{webhook_id}";
    Router::new()
        .route(&format!("{base}/deliveries"), get(list_deliveries))
        .route(
            &format!("{base}/deliveries/{{delivery_id}}"),
            get(get_delivery),
        )
        .route(
            &format!("{base}/deliveries/{{delivery_id}}/retry"),
            post(retry_delivery),
        )
        .route(&format!("{base}/replay"), post(replay))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AttemptOut {
    pub at: String,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_body: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryOut {
    pub id: String,
    pub event_id: String,
    pub event: String,
    pub status: String,
    pub attempt_count: i64,
    pub last_attempt: Option<AttemptOut>,
    pub next_attempt_at: Option<String>,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<AttemptOut>>,
}

fn attempt_out(a: &AttemptRow, with_body: bool) -> AttemptOut {
    AttemptOut {
        at: format_ms(a.at),
        http_status: a.http_status,
        error: a.error.clone(),
        duration_ms: a.duration_ms,
        response_body: with_body.then(|| a.response_body.clone()),
    }
}

fn delivery_out(d: &DeliveryRecord) -> DeliveryOut {
    DeliveryOut {
        id: d.delivery_id.clone(),
        event_id: d.event_id.clone(),
        event: d.event_type.clone(),
        status: d.status.clone(),
        attempt_count: d.attempt_count,
        last_attempt: d.last_attempt.as_ref().map(|a| attempt_out(a, false)),
        next_attempt_at: if d.status == "pending" {
            d.next_attempt_at.map(format_ms)
        } else {
            None
        },
        created_at: format_ms(d.created_at),
        attempts: None,
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryListOut {
    pub from: String,
    pub to: String,
    pub page_size: usize,
    pub next_page_token: String,
    pub deliveries: Vec<DeliveryOut>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DeliveryCursor {
    webhook_id: String,
    status: Option<String>,
    event: Option<String>,
    from: i64,
    to: i64,
    before_ts: i64,
    before_id: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[allow(dead_code)]
pub struct DeliveryParams {
    status: Option<String>,
    event: Option<String>,
    from: Option<String>,
    to: Option<String>,
    page_size: Option<String>,
    next_page_token: Option<String>,
}

#[utoipa::path(get, path = "/v2/accounts/{account_id}/qss/webhooks/{webhook_id}/deliveries", tag = "webhooks",
    security(("bearer" = ["qss:read"])), params(("account_id" = String, Path), ("webhook_id" = String, Path), DeliveryParams),
    responses((status = 200, body = DeliveryListOut), (status = 400, body = crate::openapi::ErrorBody),
        (status = 401, body = crate::openapi::ErrorBody), (status = 403, body = crate::openapi::ErrorBody),
        (status = 404, body = crate::openapi::ErrorBody)))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((account_id, webhook_id)): Path<(String, String)>,
    Query(params): Query<std::collections::HashMap<String, String>>,
) -> Result<Json<DeliveryListOut>, ApiError> {
    authorize(&state, &headers, &account_id, SCOPE_READ, true).await?;
    let page_size = parse_page_size(params.get("page_size").map(String::as_str))?;
    let now = state.clock.now_ms();
    let cursor = match params.get("next_page_token").filter(|t| !t.is_empty()) {
        Some(t) => {
            let c: DeliveryCursor = crate::page_token::decode(&state.page_key, &account_id, now, t)
                .map_err(|m| ApiError::invalid("next_page_token", m))?;
            if c.webhook_id != webhook_id {
                return Err(ApiError::invalid(
                    "next_page_token",
                    "The next_page_token is invalid.",
                ));
            }
            c
        }
        None => {
            let status = params.get("status").cloned();
            if let Some(s) = &status
                && !["pending", "succeeded", "failed", "expired", "cancelled"].contains(&s.as_str())
            {
                return Err(ApiError::invalid(
                    "status",
                    "must be pending, succeeded, failed, expired or cancelled",
                ));
            }
            let event = params.get("event").cloned();
            if let Some(e) = &event
                && EventType::parse(e).is_none()
            {
                return Err(ApiError::invalid("event", "unknown event type"));
            }
            let to = match params.get("to") {
                Some(s) => parse_bound(s, true)
                    .ok_or_else(|| ApiError::invalid("to", "must be a date or a date-time"))?,
                None => now + 1,
            };
            let from = match params.get("from") {
                Some(s) => parse_bound(s, false)
                    .ok_or_else(|| ApiError::invalid("from", "must be a date or a date-time"))?,
                None => to - 86_400_000,
            };
            if from > to || to - from > 31 * 86_400_000 {
                return Err(ApiError::invalid(
                    "from",
                    "must not be later than to, and the range may span at most 31 days",
                ));
            }
            DeliveryCursor {
                webhook_id: webhook_id.clone(),
                status,
                event,
                from,
                to,
                before_ts: i64::MAX,
                before_id: String::new(),
            }
        }
    };
    existing(&state, &account_id, &webhook_id).await?;
    let (from, to) = (cursor.from, cursor.to);
    let before =
        (cursor.before_ts != i64::MAX).then(|| (cursor.before_ts, cursor.before_id.clone()));
    let mut rows = state
        .store
        .list_deliveries(
            &account_id,
            &webhook_id,
            cursor.status.as_deref(),
            cursor.event.as_deref(),
            from,
            to,
            before,
            page_size + 1,
            now,
        )
        .await?;
    let more = rows.len() > page_size;
    rows.truncate(page_size);
    let next_page_token = match (more, rows.last()) {
        (true, Some(last)) => crate::page_token::encode(
            &state.page_key,
            &account_id,
            now,
            &DeliveryCursor {
                before_ts: last.created_at,
                before_id: last.delivery_id.clone(),
                ..cursor
            },
        ),
        _ => String::new(),
    };
    Ok(Json(DeliveryListOut {
        from: format_ms(from),
        to: format_ms(to),
        page_size,
        next_page_token,
        deliveries: rows.iter().map(delivery_out).collect(),
    }))
}

#[utoipa::path(get, path = "/v2/accounts/{account_id}/qss/webhooks/{webhook_id}/deliveries/{delivery_id}", tag = "webhooks",
    security(("bearer" = ["qss:read"])),
    params(("account_id" = String, Path), ("webhook_id" = String, Path), ("delivery_id" = String, Path)),
    responses((status = 200, body = DeliveryOut), (status = 401, body = crate::openapi::ErrorBody),
        (status = 403, body = crate::openapi::ErrorBody), (status = 404, body = crate::openapi::ErrorBody)))]
pub async fn get_delivery(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((account_id, webhook_id, delivery_id)): Path<(String, String, String)>,
) -> Result<Json<DeliveryOut>, ApiError> {
    authorize(&state, &headers, &account_id, SCOPE_READ, true).await?;
    let now = state.clock.now_ms();
    let (d, attempts) = state
        .store
        .get_delivery(&account_id, &webhook_id, &delivery_id, now)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("Delivery {delivery_id} does not exist.")))?;
    let mut out = delivery_out(&d);
    out.attempts = Some(attempts.iter().map(|a| attempt_out(a, true)).collect());
    Ok(Json(out))
}

#[utoipa::path(post, path = "/v2/accounts/{account_id}/qss/webhooks/{webhook_id}/deliveries/{delivery_id}/retry", tag = "webhooks",
    security(("bearer" = ["qss:write"])),
    params(("account_id" = String, Path), ("webhook_id" = String, Path), ("delivery_id" = String, Path)),
    responses((status = 202, description = "An attempt is scheduled now"), (status = 401, body = crate::openapi::ErrorBody),
        (status = 403, body = crate::openapi::ErrorBody), (status = 404, body = crate::openapi::ErrorBody),
        (status = 409, body = crate::openapi::ErrorBody)))]
pub async fn retry_delivery(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((account_id, webhook_id, delivery_id)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &account_id, SCOPE_WRITE, true).await?;
    let w = existing(&state, &account_id, &webhook_id).await?;
    let now = state.clock.now_ms();
    let found = state
        .store
        .get_delivery(&account_id, &webhook_id, &delivery_id, now)
        .await?;
    let Some((d, _)) = found else {
        return Err(ApiError::NotFound(format!(
            "Delivery {delivery_id} does not exist."
        )));
    };
    if w.status != "active" {
        return Err(ApiError::Conflict("The webhook is not active.".to_string()));
    }
    if d.in_flight || d.status == "cancelled" {
        return Err(ApiError::Conflict(if d.in_flight {
            "An attempt of this delivery is in flight.".to_string()
        } else {
            "The delivery was cancelled.".to_string()
        }));
    }
    if !state
        .store
        .retry_delivery(&account_id, &delivery_id, now)
        .await?
    {
        return Err(ApiError::Conflict(
            "An attempt of this delivery is in flight.".to_string(),
        ));
    }
    state.delivery_wake.notify_one();
    Ok((StatusCode::ACCEPTED, Json(json!({}))).into_response())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReplayOut {
    pub queued: usize,
}

#[utoipa::path(post, path = "/v2/accounts/{account_id}/qss/webhooks/{webhook_id}/replay", tag = "webhooks",
    security(("bearer" = ["qss:write"])), params(("account_id" = String, Path), ("webhook_id" = String, Path)),
    request_body(content = crate::schemas::ReplayIn),
    responses((status = 202, body = ReplayOut), (status = 400, body = crate::openapi::ErrorBody),
        (status = 401, body = crate::openapi::ErrorBody), (status = 403, body = crate::openapi::ErrorBody),
        (status = 404, body = crate::openapi::ErrorBody), (status = 409, body = crate::openapi::ErrorBody)))]
pub async fn replay(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((account_id, webhook_id)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &account_id, SCOPE_WRITE, true).await?;
    let v = crate::body::read_json(&headers, body, BODY_LIMIT, false).await?;
    let mut errors = ValidationErrors::new();
    let bound = |k: &str, is_to: bool, errors: &mut ValidationErrors| match v
        .get(k)
        .and_then(Value::as_str)
    {
        Some(s) => parse_bound(s, is_to).or_else(|| {
            errors.push(k, "must be a date (yyyy-mm-dd) or a date-time");
            None
        }),
        None => {
            errors.push(k, "is required");
            None
        }
    };
    let from = bound("from", false, &mut errors);
    let to = bound("to", true, &mut errors);
    let event = match v.get("event") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if EventType::parse(s).is_some() => Some(s.clone()),
        Some(_) => {
            errors.push("event", "unknown event type");
            None
        }
    };
    if let (Some(f), Some(t)) = (from, to)
        && (f > t || t - f > 31 * 86_400_000)
    {
        errors.push(
            "from",
            "must not be later than to, and the range may span at most 31 days",
        );
    }
    if !errors.is_empty() {
        return Err(errors.into());
    }
    let (from, to) = (from.expect("validated"), to.expect("validated"));
    let w = existing(&state, &account_id, &webhook_id).await?;
    let types: Vec<String> = w
        .events
        .iter()
        .filter(|t| event.as_ref().is_none_or(|e| e == *t))
        .cloned()
        .collect();
    let count = state
        .store
        .count_events(&account_id, &types, from, to)
        .await?;
    if count > MAX_REPLAY {
        return Err(ApiError::invalid(
            "from",
            format!("the range holds {count} events; at most {MAX_REPLAY} can be replayed at once"),
        ));
    }
    if w.status != "active" {
        return Err(ApiError::Conflict("The webhook is not active.".to_string()));
    }
    let now = state.clock.now_ms();
    let queued = state
        .store
        .replay(&account_id, &webhook_id, &types, from, to, now)
        .await?;
    state.delivery_wake.notify_one();
    Ok((StatusCode::ACCEPTED, Json(ReplayOut { queued })).into_response())
}
