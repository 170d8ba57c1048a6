//! `GET /v2/accounts/{accountId}/qss/events` (SPEC 5.6, 2.1): keyset pages in
//! `(event_ts, id)` order over the events committed when the first page was served.
//!
//! Polling safety rests on two facts: events are committed within 2 s of their `event_ts`, and
//! `to` is clamped to `now − 2 s` (whole seconds, the value shown in the response). A range
//! whose end is in that past is complete, so `from` = the previous `to` misses nothing.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use qss_domain::EventType;
use qss_domain::timefmt::{format_ms, parse_bound};
use qss_store::EventQuery;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::admin::parse_page_size;
use crate::auth::{SCOPE_READ, authorize};
use crate::{ApiError, AppState};

pub const VISIBILITY_DELAY_MS: i64 = 2000;
const MAX_RANGE_MS: i64 = 31 * 86_400_000;
const FILTERS: [&str; 7] = [
    "from",
    "to",
    "meeting_id",
    "meeting_instance_id",
    "participant_id",
    "call_id",
    "event",
];

pub fn router() -> Router<AppState> {
    Router::new().route("/v2/accounts/{account_id}/qss/events", get(list_events))
}

/// What a page token carries: the first page's parameters, the resolved range, the
/// snapshot and the position.
#[derive(Debug, Serialize, Deserialize)]
pub struct Cursor {
    params: HashMap<String, String>,
    from: i64,
    to: i64,
    types: Vec<String>,
    max_seq: i64,
    after_ts: i64,
    after_id: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventListOut {
    pub from: String,
    pub to: String,
    pub page_size: usize,
    pub next_page_token: String,
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<Box<RawValue>>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[allow(dead_code)]
pub struct EventParams {
    /// Inclusive lower bound on `event_ts`: `yyyy-mm-dd` or a date-time. Default `to` − 1 day.
    from: Option<String>,
    /// Exclusive upper bound; default now, clamped to now − 2 s.
    to: Option<String>,
    meeting_id: Option<String>,
    meeting_instance_id: Option<String>,
    participant_id: Option<String>,
    call_id: Option<String>,
    /// Comma-separated event types.
    event: Option<String>,
    page_size: Option<String>,
    next_page_token: Option<String>,
}

fn parse_types(v: Option<&String>) -> Result<Vec<String>, ApiError> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for t in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let Some(t) = EventType::parse(t) else {
            return Err(ApiError::invalid(
                "event",
                format!("unknown event type {t:?}"),
            ));
        };
        if !out.iter().any(|x| x == t.as_str()) {
            out.push(t.as_str().to_string());
        }
    }
    Ok(out)
}

/// Resolves `from`/`to` to whole seconds: responses show whole seconds (SPEC 2), and the value
/// shown must be the value used, or a client polling with `from` = the previous `to` would see
/// an event twice.
fn resolve_range(params: &HashMap<String, String>, now: i64) -> Result<(i64, i64), ApiError> {
    let whole = |ms: i64| ms.div_euclid(1000) * 1000;
    let latest = whole(now - VISIBILITY_DELAY_MS);
    let to = match params.get("to") {
        Some(s) => whole(parse_bound(s, true).ok_or_else(|| {
            ApiError::invalid("to", "must be a date (yyyy-mm-dd) or a date-time")
        })?),
        None => latest,
    }
    .min(latest);
    let from = match params.get("from") {
        Some(s) => whole(parse_bound(s, false).ok_or_else(|| {
            ApiError::invalid("from", "must be a date (yyyy-mm-dd) or a date-time")
        })?),
        None => to - 86_400_000,
    };
    if from > to {
        return Err(ApiError::invalid("from", "must not be later than to"));
    }
    if to - from > MAX_RANGE_MS {
        return Err(ApiError::invalid(
            "from",
            "the range from..to may span at most 31 days",
        ));
    }
    Ok((from, to))
}

#[utoipa::path(get, path = "/v2/accounts/{account_id}/qss/events", tag = "events",
    security(("bearer" = ["qss:read"])), params(("account_id" = String, Path), EventParams),
    responses((status = 200, body = EventListOut), (status = 400, body = crate::openapi::ErrorBody),
        (status = 401, body = crate::openapi::ErrorBody), (status = 403, body = crate::openapi::ErrorBody)))]
pub async fn list_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(account_id): Path<String>,
    Query(mut params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &account_id, SCOPE_READ, true).await?;
    let page_size = parse_page_size(params.get("page_size").map(String::as_str))?;
    let now = state.clock.now_ms();
    let token = params.remove("next_page_token").filter(|t| !t.is_empty());
    params.retain(|k, _| FILTERS.contains(&k.as_str()));

    let cursor = match token {
        Some(t) => {
            let cursor: Cursor = crate::page_token::decode(&state.page_key, &account_id, now, &t)
                .map_err(|m| ApiError::invalid("next_page_token", m))?;
            for (k, v) in &params {
                if cursor.params.get(k) != Some(v) {
                    return Err(ApiError::invalid(
                        k,
                        "differs from the query of next_page_token",
                    ));
                }
            }
            cursor
        }
        None => {
            let (from, to) = resolve_range(&params, now)?;
            let types = parse_types(params.get("event"))?;
            let max_seq = state.store.max_event_seq().await?;
            Cursor {
                params,
                from,
                to,
                types,
                max_seq,
                after_ts: i64::MIN,
                after_id: String::new(),
            }
        }
    };

    let q = EventQuery {
        account_id: account_id.clone(),
        from: cursor.from,
        to: cursor.to,
        event_types: cursor.types.clone(),
        meeting_id: cursor.params.get("meeting_id").cloned(),
        meeting_instance_id: cursor.params.get("meeting_instance_id").cloned(),
        participant_id: cursor.params.get("participant_id").cloned(),
        call_id: cursor.params.get("call_id").cloned(),
        after: (cursor.after_ts != i64::MIN).then(|| (cursor.after_ts, cursor.after_id.clone())),
        max_seq: Some(cursor.max_seq),
        limit: page_size + 1,
    };
    let mut rows = state.store.list_events(&q).await?;
    let more = rows.len() > page_size;
    rows.truncate(page_size);
    let next_page_token = match (more, rows.last()) {
        (true, Some(last)) => {
            let next = Cursor {
                after_ts: last.event_ts,
                after_id: last.id.clone(),
                ..cursor_clone(&cursor)
            };
            crate::page_token::encode(&state.page_key, &account_id, now, &next)
        }
        _ => String::new(),
    };
    let events = rows
        .into_iter()
        .map(|r| {
            RawValue::from_string(r.body)
                .map_err(|e| ApiError::Internal(format!("stored event: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(EventListOut {
        from: format_ms(cursor.from),
        to: format_ms(cursor.to),
        page_size,
        next_page_token,
        events,
    })
    .into_response())
}

fn cursor_clone(c: &Cursor) -> Cursor {
    Cursor {
        params: c.params.clone(),
        from: c.from,
        to: c.to,
        types: c.types.clone(),
        max_seq: c.max_seq,
        after_ts: c.after_ts,
        after_id: c.after_id.clone(),
    }
}
