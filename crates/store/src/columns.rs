//! What both backends read and write the same way: the column lists of their row mappings, and
//! the text stored for a subscription's event types.

use crate::{AttemptRow, DeliveryRecord};

pub(crate) const ACCOUNT_COLUMNS: &str = "account_id, name, plan, qss_addon, created_at, settings";

pub(crate) const WEBHOOK_COLUMNS: &str =
    "account_id, webhook_id, url, events, secret, previous_secret,
    previous_secret_until, status, description, max_age_seconds, created_at, validated_at,
    next_validation_at, validation_failures";

pub(crate) const DELIVERY_COLUMNS: &str =
    "delivery_id, webhook_id, event_id, event_type, status, attempt_count,
    next_attempt_at, created_at, lease_until, last_attempt_at, last_http_status, last_error,
    last_duration_ms";

/// A subscription's event types as stored (a JSON array).
pub(crate) fn events_json(events: &[String]) -> String {
    serde_json::to_string(events).expect("strings serialize")
}

/// The columns of [`DELIVERY_COLUMNS`], as read.
pub(crate) struct DeliveryColumns {
    pub delivery_id: String,
    pub webhook_id: String,
    pub event_id: String,
    pub event_type: String,
    pub status: String,
    pub attempt_count: i64,
    pub next_attempt_at: Option<i64>,
    pub created_at: i64,
    pub lease_until: Option<i64>,
    pub last_attempt_at: Option<i64>,
    pub last_http_status: Option<i64>,
    pub last_error: Option<String>,
    pub last_duration_ms: Option<i64>,
}

impl DeliveryColumns {
    /// The record as the API shows it at `now` (in flight while its lease runs).
    pub(crate) fn into_record(self, now: i64) -> DeliveryRecord {
        DeliveryRecord {
            delivery_id: self.delivery_id,
            webhook_id: self.webhook_id,
            event_id: self.event_id,
            event_type: self.event_type,
            status: self.status,
            attempt_count: self.attempt_count,
            next_attempt_at: self.next_attempt_at,
            created_at: self.created_at,
            in_flight: self.lease_until.is_some_and(|l| l >= now),
            last_attempt: self.last_attempt_at.map(|at| AttemptRow {
                at,
                http_status: self.last_http_status.map(|s| s as u16),
                error: self.last_error,
                duration_ms: self.last_duration_ms.unwrap_or(0),
                response_body: String::new(),
            }),
        }
    }
}
