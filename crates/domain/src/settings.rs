//! Account settings (SPEC 6) and their defaults.

use serde::{Deserialize, Serialize};

use crate::event::EventType;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    pub latency_ms: f64,
    pub jitter_ms: f64,
    pub packet_loss_pct: f64,
    pub frame_rate_fps: f64,
    pub cpu_usage_pct: f64,
    pub mos: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            latency_ms: 150.0,
            jitter_ms: 40.0,
            packet_loss_pct: 2.0,
            frame_rate_fps: 15.0,
            cpu_usage_pct: 80.0,
            mos: 3.6,
        }
    }
}

/// The writable settings of an account, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub event_types: Vec<EventType>,
    pub aggregation_interval_seconds: u32,
    pub aggregation_grace_seconds: u32,
    pub meeting_end_timeout_seconds: u32,
    pub retention_days: u32,
    pub quality_thresholds: Thresholds,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            event_types: EventType::ALL.to_vec(),
            aggregation_interval_seconds: 60,
            aggregation_grace_seconds: 10,
            meeting_end_timeout_seconds: 300,
            retention_days: 30,
            quality_thresholds: Thresholds::default(),
        }
    }
}

impl Settings {
    pub fn emits(&self, t: EventType) -> bool {
        self.event_types.contains(&t)
    }
}
