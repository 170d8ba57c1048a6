//! Validated telemetry samples (SPEC 4). Values of these types passed validation: ids are
//! 1..128 chars without control characters, numbers are finite and in range, timestamps are
//! epoch milliseconds. They are also the stored form of a raw sample (serde).

use serde::{Deserialize, Serialize};

use crate::timefmt::Millis;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MeetingType {
    #[default]
    Meeting,
    Webinar,
}

impl MeetingType {
    pub fn as_str(self) -> &'static str {
        match self {
            MeetingType::Meeting => "meeting",
            MeetingType::Webinar => "webinar",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// One media group (`audio`, `video` or `screen_share`) of a participant sample. Audio never
/// carries `resolution` or `frame_rate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaMetrics {
    pub bitrate: f64,
    pub latency: f64,
    pub jitter: f64,
    pub packet_loss: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_rate: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ParticipantMetrics {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<MediaMetrics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<MediaMetrics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screen_share: Option<MediaMetrics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_usage: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParticipantQos {
    pub meeting_id: String,
    #[serde(default)]
    pub meeting_type: MeetingType,
    pub participant_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    /// Epoch milliseconds.
    pub timestamp: Millis,
    pub metrics: ParticipantMetrics,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallMetrics {
    pub bitrate: f64,
    pub latency: f64,
    pub jitter: f64,
    pub packet_loss: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mos: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallQos {
    pub call_id: String,
    pub direction: Direction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callee_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codec: Option<String>,
    pub timestamp: Millis,
    pub metrics: CallMetrics,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeetingEnded {
    pub meeting_id: String,
    pub timestamp: Millis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallEnded {
    pub call_id: String,
    pub direction: Direction,
    pub timestamp: Millis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Sample {
    ParticipantQos(ParticipantQos),
    CallQos(CallQos),
    MeetingEnded(MeetingEnded),
    CallEnded(CallEnded),
}

impl Sample {
    pub fn timestamp(&self) -> Millis {
        match self {
            Sample::ParticipantQos(s) => s.timestamp,
            Sample::CallQos(s) => s.timestamp,
            Sample::MeetingEnded(s) => s.timestamp,
            Sample::CallEnded(s) => s.timestamp,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Sample::ParticipantQos(_) => "participant_qos",
            Sample::CallQos(_) => "call_qos",
            Sample::MeetingEnded(_) => "meeting_ended",
            Sample::CallEnded(_) => "call_ended",
        }
    }
}
