//! Request bodies as `/openapi.json` describes them. The handlers parse bodies by hand, so as
//! to name every faulty field (SPEC 2); these types only document them, with the SPEC's
//! bounds. Keep them in step with the parsers: contract/run.sh (schemathesis) reports a drift
//! as a "schema validation mismatch". Timestamps are further bound to the server's clock
//! (SPEC 4), which a schema cannot say.
#![allow(dead_code)]

use serde::Serialize;
use utoipa::ToSchema;

/// An event type (SPEC 5).
#[derive(Serialize, ToSchema)]
pub enum EventTypeName {
    #[serde(rename = "qss.meeting_participant_qos")]
    MeetingParticipantQos,
    #[serde(rename = "qss.meeting_qos_summary")]
    MeetingQosSummary,
    #[serde(rename = "qss.phone_call_qos")]
    PhoneCallQos,
}

/// `PATCH .../qss/settings`: any subset of the writable settings (SPEC 6).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    #[schema(required = false)]
    event_types: Vec<EventTypeName>,
    #[schema(required = false, minimum = 10, maximum = 3600)]
    aggregation_interval_seconds: u32,
    #[schema(required = false, minimum = 0, maximum = 300)]
    aggregation_grace_seconds: u32,
    #[schema(required = false, minimum = 30, maximum = 86400)]
    meeting_end_timeout_seconds: u32,
    #[schema(required = false, minimum = 1, maximum = 3650)]
    retention_days: u32,
    #[schema(required = false)]
    quality_thresholds: ThresholdsPatch,
}

/// Merged key by key into the current thresholds.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ThresholdsPatch {
    #[schema(required = false, minimum = 0, maximum = 60000)]
    latency_ms: f64,
    #[schema(required = false, minimum = 0, maximum = 60000)]
    jitter_ms: f64,
    #[schema(required = false, minimum = 0, maximum = 100)]
    packet_loss_pct: f64,
    #[schema(required = false, minimum = 0, maximum = 240)]
    frame_rate_fps: f64,
    #[schema(required = false, minimum = 0, maximum = 100)]
    cpu_usage_pct: f64,
    #[schema(required = false, minimum = 1, maximum = 4.5)]
    mos: f64,
}

/// `POST .../webhooks` (SPEC 7.1).
#[derive(Serialize, ToSchema)]
pub struct WebhookCreate {
    /// Absolute http(s) URL without userinfo.
    #[schema(format = "uri", max_length = 2048)]
    url: String,
    #[schema(min_items = 1)]
    events: Vec<EventTypeName>,
    /// 16 to 256 printable ASCII characters; when given, the handshake runs before saving.
    #[schema(
        required = false,
        min_length = 16,
        max_length = 256,
        pattern = "^[\\x20-\\x7E]*$"
    )]
    secret_token: String,
    #[schema(required = false, max_length = 1024)]
    description: String,
    #[schema(required = false, minimum = 60, maximum = 604800)]
    max_age_seconds: u32,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookStatusIn {
    Active,
    Paused,
}

/// `PATCH .../webhooks/{webhookId}` (SPEC 7.1).
#[derive(Serialize, ToSchema)]
pub struct WebhookPatch {
    #[schema(required = false, format = "uri", max_length = 2048)]
    url: String,
    #[schema(required = false, min_items = 1)]
    events: Vec<EventTypeName>,
    #[schema(required = false, max_length = 1024)]
    description: String,
    #[schema(required = false, minimum = 60, maximum = 604800)]
    max_age_seconds: u32,
    #[schema(required = false)]
    status: WebhookStatusIn,
}

/// `POST .../rotate_secret`: the new secret, else one is generated.
#[derive(Serialize, ToSchema)]
pub struct RotateSecretIn {
    #[schema(
        required = false,
        min_length = 16,
        max_length = 256,
        pattern = "^[\\x20-\\x7E]*$"
    )]
    secret_token: String,
}

/// `POST .../replay` (SPEC 7.5): a range of at most 31 days.
#[derive(Serialize, ToSchema)]
pub struct ReplayIn {
    /// A date (`yyyy-mm-dd`) or a date-time.
    #[schema(
        pattern = "^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2}))?$"
    )]
    from: String,
    #[schema(
        pattern = "^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2}))?$"
    )]
    to: String,
    #[schema(required = false)]
    event: EventTypeName,
}

/// `POST .../telemetry` as `application/json` (SPEC 4); NDJSON carries one sample per line.
#[derive(Serialize, ToSchema)]
pub struct TelemetryIn {
    #[schema(min_items = 1, max_items = 10000)]
    samples: Vec<SampleIn>,
}

#[derive(Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SampleIn {
    ParticipantQos(ParticipantQosIn),
    CallQos(CallQosIn),
    MeetingEnded(MeetingEndedIn),
    CallEnded(CallEndedIn),
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MeetingTypeIn {
    Meeting,
    Webinar,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DirectionIn {
    Inbound,
    Outbound,
}

/// One participant's measurements at `timestamp`.
#[derive(Serialize, ToSchema)]
pub struct ParticipantQosIn {
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*$"
    )]
    meeting_id: String,
    #[schema(required = false)]
    meeting_type: MeetingTypeIn,
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*$"
    )]
    participant_id: String,
    #[schema(
        required = false,
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*$"
    )]
    user_id: String,
    #[schema(
        required = false,
        max_length = 256,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*$"
    )]
    user_name: String,
    /// Within the last `ingest.max_sample_age_seconds` and at most 300 s ahead.
    #[schema(format = DateTime)]
    timestamp: String,
    metrics: ParticipantMetricsIn,
}

/// At least one of `audio`, `video`, `screen_share`.
#[derive(Serialize, ToSchema)]
#[schema(min_properties = 1)]
pub struct ParticipantMetricsIn {
    #[schema(required = false)]
    audio: MediaIn,
    #[schema(required = false)]
    video: VideoIn,
    #[schema(required = false)]
    screen_share: VideoIn,
    #[schema(required = false, minimum = 0, maximum = 100)]
    cpu_usage: f64,
}

#[derive(Serialize, ToSchema)]
pub struct MediaIn {
    /// kbps
    #[schema(minimum = 0, maximum = 100000)]
    bitrate: f64,
    /// ms, round trip
    #[schema(minimum = 0, maximum = 60000)]
    latency: f64,
    #[schema(minimum = 0, maximum = 60000)]
    jitter: f64,
    /// percent
    #[schema(minimum = 0, maximum = 100)]
    packet_loss: f64,
}

#[derive(Serialize, ToSchema)]
pub struct VideoIn {
    #[schema(minimum = 0, maximum = 100000)]
    bitrate: f64,
    #[schema(minimum = 0, maximum = 60000)]
    latency: f64,
    #[schema(minimum = 0, maximum = 60000)]
    jitter: f64,
    #[schema(minimum = 0, maximum = 100)]
    packet_loss: f64,
    #[schema(required = false, pattern = "^[0-9]{1,5}x[0-9]{1,5}$")]
    resolution: String,
    #[schema(required = false, minimum = 0, maximum = 240)]
    frame_rate: f64,
}

/// One call direction's measurements at `timestamp`.
#[derive(Serialize, ToSchema)]
pub struct CallQosIn {
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*$"
    )]
    call_id: String,
    direction: DirectionIn,
    #[schema(required = false, max_length = 64)]
    caller_number: String,
    #[schema(required = false, max_length = 64)]
    callee_number: String,
    #[schema(required = false, max_length = 32)]
    codec: String,
    #[schema(format = DateTime)]
    timestamp: String,
    metrics: CallMetricsIn,
}

#[derive(Serialize, ToSchema)]
pub struct CallMetricsIn {
    #[schema(minimum = 0, maximum = 100000)]
    bitrate: f64,
    #[schema(minimum = 0, maximum = 60000)]
    latency: f64,
    #[schema(minimum = 0, maximum = 60000)]
    jitter: f64,
    #[schema(minimum = 0, maximum = 100)]
    packet_loss: f64,
    #[schema(required = false, minimum = 1, maximum = 5)]
    mos: f64,
}

#[derive(Serialize, ToSchema)]
pub struct MeetingEndedIn {
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*$"
    )]
    meeting_id: String,
    #[schema(format = DateTime)]
    timestamp: String,
}

#[derive(Serialize, ToSchema)]
pub struct CallEndedIn {
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*$"
    )]
    call_id: String,
    direction: DirectionIn,
    #[schema(format = DateTime)]
    timestamp: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlanIn {
    Pro,
    Business,
    Enterprise,
}

/// `POST /admin/accounts` (SPEC 3.3).
#[derive(Serialize, ToSchema)]
pub struct AccountCreate {
    #[schema(min_length = 1, max_length = 128)]
    name: String,
    plan: PlanIn,
    #[schema(required = false)]
    qss_addon: bool,
}

/// `PATCH /admin/accounts/{accountId}`.
#[derive(Serialize, ToSchema)]
pub struct AccountPatch {
    #[schema(required = false, min_length = 1, max_length = 128)]
    name: String,
    #[schema(required = false)]
    plan: PlanIn,
    #[schema(required = false)]
    qss_addon: bool,
}

#[derive(Serialize, ToSchema)]
pub enum ScopeName {
    #[serde(rename = "qss:read")]
    Read,
    #[serde(rename = "qss:write")]
    Write,
    #[serde(rename = "qss:ingest")]
    Ingest,
}

/// Scopes of new credentials or of an operator token; `qss:read qss:write` when absent.
#[derive(Serialize, ToSchema)]
pub struct ScopesIn {
    #[schema(required = false, min_items = 1)]
    scopes: Vec<ScopeName>,
}
