//! `GET|PATCH /v2/accounts/{accountId}/qss/settings` (SPEC 6).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use qss_domain::{EventType, Num};
use serde::Serialize;

use crate::auth::{SCOPE_READ, SCOPE_WRITE, authorize};
use crate::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/v2/accounts/{account_id}/qss/settings",
        get(get_settings).patch(patch_settings),
    )
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ThresholdsOut {
    #[schema(value_type = f64)]
    pub latency_ms: Num,
    #[schema(value_type = f64)]
    pub jitter_ms: Num,
    #[schema(value_type = f64)]
    pub packet_loss_pct: Num,
    #[schema(value_type = f64)]
    pub frame_rate_fps: Num,
    #[schema(value_type = f64)]
    pub cpu_usage_pct: Num,
    #[schema(value_type = f64)]
    pub mos: Num,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SettingsOut {
    pub account_id: String,
    pub plan: String,
    pub qss_addon: bool,
    pub qss_enabled: bool,
    pub event_types: Vec<String>,
    pub aggregation_interval_seconds: u32,
    pub aggregation_grace_seconds: u32,
    pub meeting_end_timeout_seconds: u32,
    pub retention_days: u32,
    pub quality_thresholds: ThresholdsOut,
}

#[utoipa::path(get, path = "/v2/accounts/{account_id}/qss/settings", tag = "settings",
    security(("bearer" = ["qss:read"])), params(("account_id" = String, Path)),
    responses((status = 200, body = SettingsOut), (status = 401, body = crate::openapi::ErrorBody),
        (status = 403, body = crate::openapi::ErrorBody)))]
pub async fn get_settings(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(account_id): Path<String>,
) -> Result<Json<SettingsOut>, ApiError> {
    authorize(&state, &headers, &account_id, SCOPE_READ, false).await?;
    let a = state
        .accounts
        .fetch(&state.store, &account_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("Account {account_id} does not exist.")))?;
    let s = &a.settings;
    let t = &s.quality_thresholds;
    Ok(Json(SettingsOut {
        account_id: a.account_id.clone(),
        plan: a.plan.as_str().to_string(),
        qss_addon: a.qss_addon,
        qss_enabled: a.qss_enabled(),
        event_types: EventType::ALL
            .into_iter()
            .filter(|e| s.emits(*e))
            .map(|e| e.as_str().to_string())
            .collect(),
        aggregation_interval_seconds: s.aggregation_interval_seconds,
        aggregation_grace_seconds: s.aggregation_grace_seconds,
        meeting_end_timeout_seconds: s.meeting_end_timeout_seconds,
        retention_days: s.retention_days,
        quality_thresholds: ThresholdsOut {
            latency_ms: Num(t.latency_ms),
            jitter_ms: Num(t.jitter_ms),
            packet_loss_pct: Num(t.packet_loss_pct),
            frame_rate_fps: Num(t.frame_rate_fps),
            cpu_usage_pct: Num(t.cpu_usage_pct),
            mos: Num(t.mos),
        },
    }))
}

#[utoipa::path(patch, path = "/v2/accounts/{account_id}/qss/settings", tag = "settings",
    security(("bearer" = ["qss:write"])), params(("account_id" = String, Path)),
    request_body(content = crate::schemas::SettingsPatch),
    responses((status = 204, description = "Updated"), (status = 400, body = crate::openapi::ErrorBody),
        (status = 401, body = crate::openapi::ErrorBody), (status = 403, body = crate::openapi::ErrorBody),
        (status = 415, body = crate::openapi::ErrorBody)))]
pub async fn patch_settings(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(account_id): Path<String>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    authorize(&state, &headers, &account_id, SCOPE_WRITE, true).await?;
    let v = crate::body::read_json(&headers, body, 64 * 1024, false).await?;
    let current = state
        .accounts
        .get(&account_id)
        .ok_or_else(|| ApiError::NotFound(format!("Account {account_id} does not exist.")))?;
    let settings = qss_domain::settings_patch::apply_settings_patch(&current.settings, &v)?;
    let mut updated = (*current).clone();
    updated.settings = settings;
    let ok = state.store.update_account(&updated).await?;
    if !ok {
        return Err(ApiError::NotFound(format!(
            "Account {account_id} does not exist."
        )));
    }
    // In force for every sample accepted after this answer.
    state.accounts.put(updated);
    Ok(StatusCode::NO_CONTENT)
}
