//! Events (SPEC 5): the envelope, the three payload objects and event ids.

use serde::{Deserialize, Serialize};

use crate::num::Num;
use crate::timefmt::Millis;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "qss.meeting_participant_qos")]
    ParticipantQos,
    #[serde(rename = "qss.meeting_qos_summary")]
    MeetingSummary,
    #[serde(rename = "qss.phone_call_qos")]
    PhoneCallQos,
}

impl EventType {
    pub const ALL: [EventType; 3] = [
        EventType::ParticipantQos,
        EventType::MeetingSummary,
        EventType::PhoneCallQos,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::ParticipantQos => "qss.meeting_participant_qos",
            EventType::MeetingSummary => "qss.meeting_qos_summary",
            EventType::PhoneCallQos => "qss.phone_call_qos",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// `evt_` + a ULID whose time part is `event_ts`.
pub fn new_event_id(event_ts: Millis) -> String {
    let ulid = ulid::Ulid::from_parts(event_ts.max(0) as u64, rand::random::<u128>());
    format!("evt_{ulid}")
}

/// The event as stored, listed and delivered: `{"id", "event", "event_ts", "payload"}`.
#[derive(Debug, Clone, Serialize)]
pub struct EventEnvelope<O: Serialize> {
    pub id: String,
    pub event: EventType,
    pub event_ts: Millis,
    pub payload: Payload<O>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Payload<O: Serialize> {
    pub account_id: String,
    pub object: O,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quality {
    pub mos: Num,
    pub r_factor: Num,
    pub grade: Grade,
    pub issues: Vec<Issue>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Grade {
    Good,
    Fair,
    Poor,
    Bad,
}

impl Grade {
    pub fn as_str(self) -> &'static str {
        match self {
            Grade::Good => "good",
            Grade::Fair => "fair",
            Grade::Poor => "poor",
            Grade::Bad => "bad",
        }
    }
}

/// Issue tags, declared in the order the SPEC lists them (5.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Issue {
    HighLatency,
    HighJitter,
    HighPacketLoss,
    LowFrameRate,
    HighCpu,
    LowMos,
}

/// Window means of one media group (5.2).
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct GroupMeans {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bitrate: Option<Num>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Num>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Num>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packet_loss: Option<Num>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame_rate: Option<Num>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ParticipantMeans {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio: Option<GroupMeans>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video: Option<GroupMeans>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub screen_share: Option<GroupMeans>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_usage: Option<Num>,
}

/// `object` of `qss.meeting_participant_qos` (5.2).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParticipantQosObject {
    pub meeting_id: String,
    pub meeting_instance_id: String,
    pub meeting_type: String,
    pub participant_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    pub timestamp: String,
    pub interval_seconds: u32,
    pub sample_count: u64,
    pub metrics: ParticipantMeans,
    pub quality: Quality,
}

/// `{"avg", "min", "max", "p50", "p95"}` of one number over a meeting instance (5.3).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    pub avg: Num,
    pub min: Num,
    pub max: Num,
    pub p50: Num,
    pub p95: Num,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct GroupStats {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bitrate: Option<Stats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Stats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Stats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packet_loss: Option<Stats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame_rate: Option<Stats>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct SummaryMetrics {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio: Option<GroupStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video: Option<GroupStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub screen_share: Option<GroupStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_usage: Option<Stats>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GradeCounts {
    pub good: u64,
    pub fair: u64,
    pub poor: u64,
    pub bad: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoorParticipant {
    pub participant_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    pub mos: Num,
    pub grade: Grade,
    pub issues: Vec<Issue>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SummaryQuality {
    pub mos_avg: Num,
    pub grade: Grade,
    pub grade_counts: GradeCounts,
    pub poor_participants: Vec<PoorParticipant>,
}

/// `object` of `qss.meeting_qos_summary` (5.3).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeetingSummaryObject {
    pub meeting_id: String,
    pub meeting_instance_id: String,
    pub meeting_type: String,
    pub start_time: String,
    pub end_time: String,
    pub duration_seconds: i64,
    pub participant_count: u64,
    pub sample_count: u64,
    pub metrics: SummaryMetrics,
    pub quality: SummaryQuality,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallMeans {
    pub bitrate: Num,
    pub latency: Num,
    pub jitter: Num,
    pub packet_loss: Num,
    pub mos: Num,
}

/// `object` of `qss.phone_call_qos` (5.4).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhoneCallQosObject {
    pub call_id: String,
    pub direction: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callee_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub codec: Option<String>,
    pub timestamp: String,
    pub interval_seconds: u32,
    pub sample_count: u64,
    pub metrics: CallMeans,
    pub quality: Quality,
}
