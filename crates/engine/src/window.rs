//! Window accumulators: everything one participant (SPEC 5.2) or one phone-call direction
//! (SPEC 5.4) sent in one window, reduced to what its event needs.
//!
//! The caller decides which samples belong to the window (the interval in force at acceptance,
//! the meeting instance) and whether the window may still take samples; an accumulator only
//! adds, merges and finishes. It keeps sums, counts and a few strings, never the samples, so its
//! size does not grow with the number of samples.

use qss_domain::event::{
    CallMeans, GroupMeans, ParticipantMeans, ParticipantQosObject, PhoneCallQosObject, Quality,
};
use qss_domain::sample::{CallQos, Direction, ParticipantQos};
use qss_domain::settings::Thresholds;
use qss_domain::timefmt::{Millis, format_ms};
use serde::{Deserialize, Serialize};

use crate::groups::{GroupAcc, MetricsAcc};
use crate::pick::Latest;
use crate::scoring::{call_quality, participant_quality};
use crate::sum::Mean;

/// What a participant window's event needs beyond its samples.
#[derive(Debug, Clone, Copy)]
pub struct WindowCtx<'a> {
    pub meeting_id: &'a str,
    pub meeting_instance_id: &'a str,
    /// `meeting` or `webinar`, from the instance's first sample (SPEC 5.2).
    pub meeting_type: &'a str,
    pub participant_id: &'a str,
    /// Window start, epoch milliseconds; becomes the event's `timestamp`.
    pub window_start: Millis,
    pub interval_seconds: u32,
    /// The thresholds in force when the event is emitted (SPEC 5.5).
    pub thresholds: &'a Thresholds,
}

/// The `participant_qos` samples of one (meeting instance, participant, window).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ParticipantWindowAcc {
    metrics: MetricsAcc<Mean>,
    user_id: Latest,
    user_name: Latest,
    sample_count: u64,
}

impl ParticipantWindowAcc {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, sample: &ParticipantQos) {
        let ts = sample.timestamp;
        self.metrics.add(&sample.metrics, ts);
        self.user_id.offer(ts, sample.user_id.as_deref());
        self.user_name.offer(ts, sample.user_name.as_deref());
        self.sample_count += 1;
    }

    /// Adds every sample of `other`, as if they had been added one by one.
    pub fn merge(&mut self, other: &ParticipantWindowAcc) {
        self.metrics.merge(&other.metrics);
        self.user_id.merge(&other.user_id);
        self.user_name.merge(&other.user_name);
        self.sample_count += other.sample_count;
    }

    pub fn sample_count(&self) -> u64 {
        self.sample_count
    }

    pub fn is_empty(&self) -> bool {
        self.sample_count == 0
    }

    /// `user_id` of the latest sample that carried one.
    pub fn user_id(&self) -> Option<&str> {
        self.user_id.get()
    }

    /// `user_name` of the latest sample that carried one.
    pub fn user_name(&self) -> Option<&str> {
        self.user_name.get()
    }

    /// The rounded means, group by group; what no sample carried is absent.
    pub fn means(&self) -> ParticipantMeans {
        let m = &self.metrics;
        ParticipantMeans {
            audio: m.audio.as_deref().map(group_means),
            video: m.video.as_deref().map(group_means),
            screen_share: m.screen_share.as_deref().map(group_means),
            cpu_usage: m.cpu_usage.rounded(),
        }
    }

    /// The quality of the rounded means.
    pub fn quality(&self, thresholds: &Thresholds) -> Quality {
        participant_quality(&self.means(), thresholds)
    }

    /// The event object. Meant for a window with at least one sample; an empty one gives an
    /// object with no metrics and `sample_count` 0.
    pub fn finish(&self, ctx: &WindowCtx<'_>) -> ParticipantQosObject {
        let metrics = self.means();
        let quality = participant_quality(&metrics, ctx.thresholds);
        ParticipantQosObject {
            meeting_id: ctx.meeting_id.to_owned(),
            meeting_instance_id: ctx.meeting_instance_id.to_owned(),
            meeting_type: ctx.meeting_type.to_owned(),
            participant_id: ctx.participant_id.to_owned(),
            user_id: self.user_id().map(str::to_owned),
            user_name: self.user_name().map(str::to_owned),
            timestamp: format_ms(ctx.window_start),
            interval_seconds: ctx.interval_seconds,
            sample_count: self.sample_count,
            metrics,
            quality,
        }
    }

    /// A rough size in bytes, for memory accounting.
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.metrics.approx_bytes()
            + self.user_id.get().map_or(0, str::len)
            + self.user_name.get().map_or(0, str::len)
    }
}

fn group_means(g: &GroupAcc<Mean>) -> GroupMeans {
    GroupMeans {
        bitrate: g.bitrate.rounded(),
        latency: g.latency.rounded(),
        jitter: g.jitter.rounded(),
        packet_loss: g.packet_loss.rounded(),
        resolution: g.resolution.most_frequent().map(str::to_owned),
        frame_rate: g.frame_rate.rounded(),
    }
}

/// What a phone-call window's event needs beyond its samples.
#[derive(Debug, Clone, Copy)]
pub struct CallWindowCtx<'a> {
    pub call_id: &'a str,
    pub direction: Direction,
    /// Window start, epoch milliseconds; becomes the event's `timestamp`.
    pub window_start: Millis,
    pub interval_seconds: u32,
    /// The thresholds in force when the event is emitted (SPEC 5.5).
    pub thresholds: &'a Thresholds,
}

/// The `call_qos` samples of one (call, direction, window).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallWindowAcc {
    bitrate: Mean,
    latency: Mean,
    jitter: Mean,
    packet_loss: Mean,
    /// Client-reported MOS, optional per sample.
    mos: Mean,
    caller_number: Latest,
    callee_number: Latest,
    codec: Latest,
    sample_count: u64,
}

impl CallWindowAcc {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, sample: &CallQos) {
        let (ts, m) = (sample.timestamp, &sample.metrics);
        self.bitrate.add(m.bitrate);
        self.latency.add(m.latency);
        self.jitter.add(m.jitter);
        self.packet_loss.add(m.packet_loss);
        if let Some(mos) = m.mos {
            self.mos.add(mos);
        }
        self.caller_number
            .offer(ts, sample.caller_number.as_deref());
        self.callee_number
            .offer(ts, sample.callee_number.as_deref());
        self.codec.offer(ts, sample.codec.as_deref());
        self.sample_count += 1;
    }

    /// Adds every sample of `other`, as if they had been added one by one.
    pub fn merge(&mut self, other: &CallWindowAcc) {
        self.bitrate.merge(&other.bitrate);
        self.latency.merge(&other.latency);
        self.jitter.merge(&other.jitter);
        self.packet_loss.merge(&other.packet_loss);
        self.mos.merge(&other.mos);
        self.caller_number.merge(&other.caller_number);
        self.callee_number.merge(&other.callee_number);
        self.codec.merge(&other.codec);
        self.sample_count += other.sample_count;
    }

    pub fn sample_count(&self) -> u64 {
        self.sample_count
    }

    pub fn is_empty(&self) -> bool {
        self.sample_count == 0
    }

    /// The event object. `metrics.mos` is the mean client-reported MOS when some sample had
    /// one, else the computed `quality.mos`; `quality` always comes from the rounded means
    /// (SPEC 5.4). Meant for a window with at least one sample; an empty one reads as zeros.
    pub fn finish(&self, ctx: &CallWindowCtx<'_>) -> PhoneCallQosObject {
        let rounded = |m: &Mean| m.rounded().unwrap_or_default();
        let (latency, jitter, packet_loss) = (
            rounded(&self.latency),
            rounded(&self.jitter),
            rounded(&self.packet_loss),
        );
        let quality = call_quality(
            latency.get(),
            jitter.get(),
            packet_loss.get(),
            ctx.thresholds,
        );
        let metrics = CallMeans {
            bitrate: rounded(&self.bitrate),
            latency,
            jitter,
            packet_loss,
            mos: self.mos.rounded().unwrap_or(quality.mos),
        };
        PhoneCallQosObject {
            call_id: ctx.call_id.to_owned(),
            direction: ctx.direction.as_str().to_owned(),
            caller_number: self.caller_number.get().map(str::to_owned),
            callee_number: self.callee_number.get().map(str::to_owned),
            codec: self.codec.get().map(str::to_owned),
            timestamp: format_ms(ctx.window_start),
            interval_seconds: ctx.interval_seconds,
            sample_count: self.sample_count,
            metrics,
            quality,
        }
    }

    /// A rough size in bytes, for memory accounting.
    pub fn approx_bytes(&self) -> usize {
        let strings = [&self.caller_number, &self.callee_number, &self.codec];
        std::mem::size_of::<Self>()
            + strings
                .iter()
                .map(|l| l.get().map_or(0, str::len))
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use qss_domain::Num;
    use qss_domain::event::{Grade, Issue};
    use qss_domain::sample::{CallMetrics, MediaMetrics, MeetingType, ParticipantMetrics};

    use super::*;

    const T0: Millis = 1_705_314_600_000; // 2024-01-15T10:30:00Z

    fn media(bitrate: f64, latency: f64, jitter: f64, loss: f64) -> MediaMetrics {
        MediaMetrics {
            bitrate,
            latency,
            jitter,
            packet_loss: loss,
            resolution: None,
            frame_rate: None,
        }
    }

    fn participant_sample(ts: Millis, metrics: ParticipantMetrics) -> ParticipantQos {
        ParticipantQos {
            meeting_id: "m1".into(),
            meeting_type: MeetingType::Meeting,
            participant_id: "p1".into(),
            user_id: None,
            user_name: None,
            timestamp: ts,
            metrics,
        }
    }

    fn ctx(thresholds: &Thresholds) -> WindowCtx<'_> {
        WindowCtx {
            meeting_id: "m1",
            meeting_instance_id: "mi1",
            meeting_type: "meeting",
            participant_id: "p1",
            window_start: T0,
            interval_seconds: 60,
            thresholds,
        }
    }

    fn call_sample(ts: Millis, latency: f64, mos: Option<f64>) -> CallQos {
        CallQos {
            call_id: "c1".into(),
            direction: Direction::Inbound,
            caller_number: None,
            callee_number: None,
            codec: None,
            timestamp: ts,
            metrics: CallMetrics {
                bitrate: 64.0,
                latency,
                jitter: 2.0,
                packet_loss: 0.0,
                mos,
            },
        }
    }

    fn call_ctx(thresholds: &Thresholds) -> CallWindowCtx<'_> {
        CallWindowCtx {
            call_id: "c1",
            direction: Direction::Inbound,
            window_start: T0,
            interval_seconds: 60,
            thresholds,
        }
    }

    #[test]
    fn the_example_window_of_the_spec_becomes_its_event() {
        let mut video = media(1500.0, 60.0, 15.0, 0.2);
        video.resolution = Some("1280x720".into());
        video.frame_rate = Some(30.0);
        let metrics = ParticipantMetrics {
            audio: Some(media(64.0, 50.0, 10.0, 0.5)),
            video: Some(video),
            screen_share: None,
            cpu_usage: Some(25.0),
        };
        let mut acc = ParticipantWindowAcc::new();
        for i in 0..10 {
            acc.add(&participant_sample(T0 + i * 6000, metrics.clone()));
        }
        let t = Thresholds::default();
        let json = serde_json::to_value(acc.finish(&ctx(&t))).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "meeting_id": "m1", "meeting_instance_id": "mi1", "meeting_type": "meeting",
                "participant_id": "p1", "timestamp": "2024-01-15T10:30:00Z",
                "interval_seconds": 60, "sample_count": 10,
                "metrics": {"audio": {"bitrate": 64, "latency": 50, "jitter": 10, "packet_loss": 0.5},
                            "video": {"bitrate": 1500, "latency": 60, "jitter": 15, "packet_loss": 0.2,
                                      "resolution": "1280x720", "frame_rate": 30},
                            "cpu_usage": 25},
                "quality": {"mos": 4.34, "r_factor": 89.95, "grade": "good", "issues": []}
            })
        );
    }

    #[test]
    fn fields_no_sample_carried_are_absent_and_means_cover_only_carriers() {
        let mut with_rate = media(1000.0, 20.0, 2.0, 0.0);
        with_rate.frame_rate = Some(10.0);
        let mut acc = ParticipantWindowAcc::new();
        acc.add(&participant_sample(
            T0,
            ParticipantMetrics {
                video: Some(with_rate),
                ..ParticipantMetrics::default()
            },
        ));
        acc.add(&participant_sample(
            T0 + 1,
            ParticipantMetrics {
                video: Some(media(2000.0, 40.0, 4.0, 1.0)),
                ..ParticipantMetrics::default()
            },
        ));
        let means = acc.means();
        assert!(means.audio.is_none() && means.screen_share.is_none());
        assert!(means.cpu_usage.is_none());
        let video = means.video.unwrap();
        assert_eq!(video.bitrate, Some(Num(1500.0)));
        assert_eq!(video.frame_rate, Some(Num(10.0)));
        assert_eq!(video.resolution, None);
        // Scored from video, since there is no audio; the frame rate is low while sending.
        let q = acc.quality(&Thresholds::default());
        assert_eq!(q.issues, vec![Issue::LowFrameRate]);
    }

    #[test]
    fn user_fields_come_from_the_latest_sample_carrying_them() {
        let audio = ParticipantMetrics {
            audio: Some(media(64.0, 20.0, 2.0, 0.0)),
            ..ParticipantMetrics::default()
        };
        let mut late = participant_sample(T0 + 2000, audio.clone());
        late.user_name = Some("Ann (phone)".into());
        let mut early = participant_sample(T0, audio.clone());
        early.user_name = Some("Ann".into());
        early.user_id = Some("u1".into());
        let latest = participant_sample(T0 + 3000, audio);

        let mut acc = ParticipantWindowAcc::new();
        for s in [&late, &latest, &early] {
            acc.add(s);
        }
        let t = Thresholds::default();
        let object = acc.finish(&ctx(&t));
        assert_eq!(object.user_name.as_deref(), Some("Ann (phone)"));
        assert_eq!(object.user_id.as_deref(), Some("u1"));
    }

    #[test]
    fn a_call_window_reports_the_client_mos_when_there_is_one() {
        let t = Thresholds::default();
        let mut acc = CallWindowAcc::new();
        acc.add(&call_sample(T0, 20.0, Some(4.1)));
        acc.add(&call_sample(T0 + 5000, 20.0, None));
        acc.add(&call_sample(T0 + 10_000, 20.0, Some(3.0)));
        let object = acc.finish(&call_ctx(&t));
        assert_eq!(object.metrics.mos, Num(3.55));
        // The quality ignores the client's view: 20/2/0 scores 4.39.
        assert_eq!(object.quality.mos, Num(4.39));
        assert_eq!(object.quality.grade, Grade::Good);
        assert_eq!(object.direction, "inbound");
        assert_eq!(object.sample_count, 3);
    }

    #[test]
    fn a_call_window_without_client_mos_reports_the_computed_one() {
        let t = Thresholds::default();
        let mut acc = CallWindowAcc::new();
        let mut first = call_sample(T0, 100.0, None);
        first.codec = Some("opus".into());
        first.caller_number = Some("+15550100".into());
        let mut second = call_sample(T0 + 5000, 300.0, None);
        second.codec = Some("g711".into());
        acc.add(&second);
        acc.add(&first);
        let object = acc.finish(&call_ctx(&t));
        assert_eq!(object.metrics.latency, Num(200.0));
        assert_eq!(object.metrics.mos, object.quality.mos);
        assert_eq!(object.codec.as_deref(), Some("g711"));
        assert_eq!(object.caller_number.as_deref(), Some("+15550100"));
        assert_eq!(object.callee_number, None);
    }

    #[test]
    fn window_accumulators_survive_a_round_trip_through_json() {
        let mut acc = ParticipantWindowAcc::new();
        let mut video = media(1500.0, 60.0, 15.0, 0.2);
        video.resolution = Some("1280x720".into());
        acc.add(&participant_sample(
            T0,
            ParticipantMetrics {
                video: Some(video),
                cpu_usage: Some(12.5),
                ..ParticipantMetrics::default()
            },
        ));
        let json = serde_json::to_string(&acc).unwrap();
        assert_eq!(
            serde_json::from_str::<ParticipantWindowAcc>(&json).unwrap(),
            acc
        );

        let mut call = CallWindowAcc::new();
        call.add(&call_sample(T0, 20.0, Some(4.0)));
        let json = serde_json::to_string(&call).unwrap();
        assert_eq!(serde_json::from_str::<CallWindowAcc>(&json).unwrap(), call);
    }
}
