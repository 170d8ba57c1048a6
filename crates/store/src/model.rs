//! Records the store reads and writes. They are storage shapes, not wire types: the API maps
//! them to its `...Out` types.

use qss_domain::{Plan, Settings};

#[derive(Debug, Clone, PartialEq)]
pub struct AccountRecord {
    pub account_id: String,
    pub name: String,
    pub plan: Plan,
    pub qss_addon: bool,
    pub created_at: i64,
    pub settings: Settings,
}

impl AccountRecord {
    pub fn qss_enabled(&self) -> bool {
        self.plan.qss_enabled(self.qss_addon)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct IngestKeyRecord {
    pub key_id: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// Who a bearer token or ingest key speaks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    pub account_id: String,
    /// Space-separated scopes.
    pub scopes: String,
    /// Epoch ms after which the token is refused; `None` for ingest keys.
    pub expires_at: Option<i64>,
}

impl Principal {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.split(' ').any(|s| s == scope)
    }
}

/// A raw sample to append. `route` records where the aggregator put it at acceptance (the
/// meeting instance or call instance), so that recovery replays it to the same place.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRow {
    pub account_id: String,
    pub received_ms: i64,
    pub ts: i64,
    pub interval_s: u32,
    pub route: String,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredSample {
    pub seq: i64,
    pub row: SampleRow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceStatus {
    /// Receiving samples.
    Open,
    /// Ended (by `meeting_ended` or timeout); the summary is not committed yet.
    Ended,
    /// Summary committed: nothing of this instance is needed any more.
    Closed,
}

impl InstanceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceStatus::Open => "open",
            InstanceStatus::Ended => "ended",
            InstanceStatus::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(InstanceStatus::Open),
            "ended" => Some(InstanceStatus::Ended),
            "closed" => Some(InstanceStatus::Closed),
            _ => None,
        }
    }
}

/// A meeting instance (`kind` "meeting", `series_id` the meeting id) or a call generation
/// (`kind` "call", `series_id` the call id, with its direction).
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRow {
    pub account_id: String,
    pub instance_id: String,
    pub kind: String,
    pub series_id: String,
    pub direction: Option<String>,
    pub meeting_type: String,
    pub first_seq: i64,
    pub status: InstanceStatus,
    /// End timestamp (the end sample's, or the last sample's on timeout).
    pub end_ts: Option<i64>,
    /// True when an end sample (`meeting_ended`, `call_ended`) ended it.
    pub ended_explicitly: bool,
}

/// An event to commit. `dedup_key` is unique per account, so an event is never stored twice
/// (a participant window, a call window or a meeting instance).
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub id: String,
    pub account_id: String,
    pub event_type: String,
    pub event_ts: i64,
    pub meeting_id: Option<String>,
    pub meeting_instance_id: Option<String>,
    pub participant_id: Option<String>,
    pub call_id: Option<String>,
    pub dedup_key: String,
    pub body: String,
}

/// One page query over the events of an account (SPEC 5.6), in `(event_ts, id)` order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventQuery {
    pub account_id: String,
    pub from: i64,
    pub to: i64,
    pub event_types: Vec<String>,
    pub meeting_id: Option<String>,
    pub meeting_instance_id: Option<String>,
    pub participant_id: Option<String>,
    pub call_id: Option<String>,
    /// Keyset position: items strictly after `(event_ts, id)`.
    pub after: Option<(i64, String)>,
    /// Only events committed at or before this commit sequence (the first page's snapshot).
    pub max_seq: Option<i64>,
    pub limit: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub seq: i64,
    pub id: String,
    pub event_ts: i64,
    pub body: String,
}

/// A webhook subscription as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookRecord {
    pub account_id: String,
    pub webhook_id: String,
    pub url: String,
    /// Event types, in canonical order.
    pub events: Vec<String>,
    pub secret: String,
    /// The secret before the last rotation, valid until `previous_secret_until`.
    pub previous_secret: Option<String>,
    pub previous_secret_until: Option<i64>,
    /// `pending_validation`, `active`, `paused` or `disabled`.
    pub status: String,
    pub description: Option<String>,
    pub max_age_seconds: Option<i64>,
    pub created_at: i64,
    pub validated_at: Option<i64>,
    pub next_validation_at: Option<i64>,
    pub validation_failures: i64,
}

/// A delivery claimed by a worker under a lease; `lease_token` fences its result.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedDelivery {
    pub account_id: String,
    pub delivery_id: String,
    pub webhook_id: String,
    pub event_id: String,
    pub attempt_count: i64,
    pub auto_retry: bool,
    pub created_at: i64,
    pub lease_token: i64,
    /// The event's stored body (`None` if retention removed it).
    pub body: Option<String>,
}

/// One attempt's result, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRow {
    pub at: i64,
    pub http_status: Option<u16>,
    /// `timeout`, `connect`, `dns`, `tls`, `refused_address` or `http_status`.
    pub error: Option<String>,
    pub duration_ms: i64,
    pub response_body: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecord {
    pub delivery_id: String,
    pub webhook_id: String,
    pub event_id: String,
    pub event_type: String,
    /// `pending`, `succeeded`, `failed`, `expired` or `cancelled`.
    pub status: String,
    pub attempt_count: i64,
    pub next_attempt_at: Option<i64>,
    pub created_at: i64,
    pub in_flight: bool,
    pub last_attempt: Option<AttemptRow>,
}

/// An attempt to record with the delivery's next state.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    pub claim: ClaimedDelivery,
    pub attempt: AttemptRow,
    /// The delivery's new status: `pending` (with `next_attempt_at`), `succeeded`, `failed`,
    /// `expired`.
    pub status: &'static str,
    pub next_attempt_at: Option<i64>,
    /// The endpoint answered 410: disable the subscription and cancel its deliveries.
    pub disable_webhook: bool,
}
