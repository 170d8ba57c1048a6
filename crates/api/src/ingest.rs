//! `POST /v2/accounts/{accountId}/qss/telemetry` (SPEC 4). The handler authenticates,
//! reads and validates the whole batch, then hands it to the aggregation thread and waits
//! until the batch is durably committed (group commit) before answering 202.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use qss_domain::Sample;
use qss_domain::ingest::{BodyFormat, IngestError, IngestLimits, parse_batch};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::auth::{SCOPE_INGEST, authorize};
use crate::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new().route("/v2/accounts/{account_id}/qss/telemetry", post(telemetry))
}

/// A validated batch on its way to the aggregation thread.
#[derive(Debug)]
pub struct IngestJob {
    pub account_id: String,
    pub samples: Vec<Sample>,
    /// Each sample's raw-log text (its JSON), encoded here on the blocking pool rather than
    /// on the single aggregation thread; `bodies[i]` is `samples[i]`'s.
    pub bodies: Vec<String>,
    pub received_ms: i64,
    /// Answered once the batch is durable (or failed to be).
    pub reply: IngestReply,
}

/// Where a batch's outcome goes. It also holds the request's share of `ingest.max_in_flight`,
/// so the share is released when the batch is answered, even if the client gave up waiting:
/// batches queued for a slow store count until the store has taken them.
#[derive(Debug)]
pub struct IngestReply {
    tx: oneshot::Sender<Result<IngestOutcome, IngestFailure>>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl IngestReply {
    pub fn send(
        self,
        outcome: Result<IngestOutcome, IngestFailure>,
    ) -> Result<(), Result<IngestOutcome, IngestFailure>> {
        self.tx.send(outcome)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct IngestOutcome {
    pub accepted: usize,
    pub duplicates: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestFailure {
    /// The database could not commit; nothing of the batch is stored.
    Unavailable,
}

#[utoipa::path(post, path = "/v2/accounts/{account_id}/qss/telemetry", tag = "telemetry",
    security(("bearer" = ["qss:ingest"])), params(("account_id" = String, Path)),
    request_body(content(
        (crate::schemas::TelemetryIn = "application/json"),
        (crate::schemas::SampleIn = "application/x-ndjson")),
        description = "`{\"samples\": [...]}` as application/json, or one sample per line as application/x-ndjson; `Content-Encoding: gzip` accepted"),
    responses((status = 202, body = IngestOutcome), (status = 400, body = crate::openapi::ErrorBody),
        (status = 401, body = crate::openapi::ErrorBody), (status = 403, body = crate::openapi::ErrorBody),
        (status = 413, body = crate::openapi::ErrorBody), (status = 415, body = crate::openapi::ErrorBody),
        (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn telemetry(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(account_id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &account_id, SCOPE_INGEST, true).await?;
    // Overload: past `ingest.max_in_flight` batches read, queued or being committed, the
    // request is turned away before its body is read, so memory stays bounded (issue 7).
    let Ok(permit) = state.ingest_permits.clone().try_acquire_owned() else {
        state.metrics.ingest_overloaded.inc();
        return Err(ApiError::Unavailable(1));
    };
    let format = match crate::body::media_type(&headers).as_deref() {
        Some("application/json") => BodyFormat::Json,
        Some("application/x-ndjson" | "application/ndjson") => BodyFormat::Ndjson,
        Some(other) => {
            return Err(ApiError::UnsupportedMedia(format!(
                "Unsupported Content-Type: {other}; use application/json or application/x-ndjson."
            )));
        }
        None => {
            return Err(ApiError::UnsupportedMedia(
                "Missing Content-Type; use application/json or application/x-ndjson.".into(),
            ));
        }
    };
    let bytes = crate::body::read_limited(&headers, body, state.config.max_body_bytes).await?;
    let now = state.clock.now_ms();
    let limits = IngestLimits {
        max_samples: state.config.max_samples,
        max_sample_age_ms: state.config.max_sample_age_seconds * 1000,
    };
    // Parsing a 4 MiB batch takes milliseconds: keep it off the async workers.
    let parsed = tokio::task::spawn_blocking(move || {
        parse_batch(&bytes, format, now, &limits).map(|samples| {
            let bodies = samples
                .iter()
                .map(|s| serde_json::to_string(s).expect("samples serialize"))
                .collect::<Vec<_>>();
            (samples, bodies)
        })
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let (samples, bodies) = match parsed {
        Ok(parsed) => parsed,
        Err(IngestError::TooManySamples { count, max }) => {
            return Err(ApiError::TooLarge(format!(
                "The batch holds {count} samples; the limit is {max}."
            )));
        }
        Err(IngestError::Invalid(errors)) => {
            state.metrics.ingest_requests_rejected.inc();
            return Err(ApiError::Validation(errors));
        }
    };
    let (tx, answer) = oneshot::channel();
    let job = IngestJob {
        account_id,
        samples,
        bodies,
        received_ms: now,
        reply: IngestReply {
            tx,
            _permit: permit,
        },
    };
    state
        .ingest
        .send(job)
        .await
        .map_err(|_| ApiError::Unavailable(5))?;
    // A store that takes longer than this is not keeping up: the client is told to come back
    // (the batch may still be stored; a resend is then counted as duplicates).
    let wait = std::time::Duration::from_millis(state.config.ingest_commit_timeout_ms);
    match tokio::time::timeout(wait, answer).await {
        Ok(Ok(Ok(outcome))) => Ok((StatusCode::ACCEPTED, Json(outcome)).into_response()),
        Ok(Ok(Err(IngestFailure::Unavailable)) | Err(_)) => Err(ApiError::Unavailable(1)),
        Err(_) => {
            state.metrics.ingest_overloaded.inc();
            Err(ApiError::Unavailable(2))
        }
    }
}
