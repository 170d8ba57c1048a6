//! The meeting summary accumulator (SPEC 5.3): every `participant_qos` sample of one meeting
//! instance, reduced to per-field distributions and one window accumulator per participant.
//!
//! A participant's summary MOS is "the MOS of its rounded means over all its samples of the
//! instance", which is exactly what a [`ParticipantWindowAcc`] spanning the whole instance
//! computes, so the summary keeps one per participant instead of a second implementation.

use std::collections::BTreeMap;

use qss_domain::event::{
    Grade, GradeCounts, GroupStats, MeetingSummaryObject, PoorParticipant, SummaryMetrics,
    SummaryQuality,
};
use qss_domain::sample::ParticipantQos;
use qss_domain::settings::Thresholds;
use qss_domain::timefmt::{Millis, format_ms};
use serde::{Deserialize, Serialize};

use crate::distribution::Distribution;
use crate::groups::{GroupAcc, MetricsAcc};
use crate::scoring::grade;
use crate::sum::Mean;
use crate::window::ParticipantWindowAcc;

/// At most this many participants are listed in `poor_participants`.
const MAX_POOR_PARTICIPANTS: usize = 10;

/// What a summary needs beyond its samples.
#[derive(Debug, Clone, Copy)]
pub struct SummaryCtx<'a> {
    pub meeting_id: &'a str,
    pub meeting_instance_id: &'a str,
    /// `meeting` or `webinar`, from the instance's first sample, as in its participant events.
    pub meeting_type: &'a str,
    /// The `meeting_ended` timestamp if one ended the instance, else
    /// [`MeetingSummaryAcc::last_timestamp`].
    pub end_time: Millis,
    /// The thresholds in force when the summary is emitted (SPEC 5.5).
    pub thresholds: &'a Thresholds,
}

/// All `participant_qos` samples of one meeting instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MeetingSummaryAcc {
    first: Option<Millis>,
    last: Option<Millis>,
    sample_count: u64,
    metrics: MetricsAcc<Distribution>,
    /// Boxed: B-tree nodes hold eleven values inline, which for an accumulator of this size
    /// would cost about a kilobyte per participant in slack.
    participants: BTreeMap<String, Box<ParticipantWindowAcc>>,
}

impl MeetingSummaryAcc {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, sample: &ParticipantQos) {
        let ts = sample.timestamp;
        self.first = Some(self.first.map_or(ts, |first| first.min(ts)));
        self.last = Some(self.last.map_or(ts, |last| last.max(ts)));
        self.sample_count += 1;
        self.metrics.add(&sample.metrics, ts);
        match self.participants.get_mut(&sample.participant_id) {
            Some(acc) => acc.add(sample),
            None => {
                let mut acc = Box::new(ParticipantWindowAcc::new());
                acc.add(sample);
                self.participants.insert(sample.participant_id.clone(), acc);
            }
        }
    }

    /// Adds every sample of `other`, as if they had been added one by one.
    pub fn merge(&mut self, other: &MeetingSummaryAcc) {
        self.first = match (self.first, other.first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last = self.last.max(other.last);
        self.sample_count += other.sample_count;
        self.metrics.merge(&other.metrics);
        for (id, theirs) in &other.participants {
            self.participants
                .entry(id.clone())
                .or_default()
                .merge(theirs);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sample_count == 0
    }

    pub fn sample_count(&self) -> u64 {
        self.sample_count
    }

    pub fn participant_count(&self) -> u64 {
        self.participants.len() as u64
    }

    /// The earliest sample timestamp: the summary's `start_time`.
    pub fn first_timestamp(&self) -> Option<Millis> {
        self.first
    }

    /// The latest sample timestamp: the summary's `end_time` when no `meeting_ended` ended the
    /// instance.
    pub fn last_timestamp(&self) -> Option<Millis> {
        self.last
    }

    /// The summary object.
    ///
    /// Meant for an instance with at least one sample (SPEC: a meeting without samples creates
    /// nothing). An empty one gives `start_time` = `end_time`, no metrics, `mos_avg` 0 and grade
    /// `bad`. An `end_time` before `start_time` gives `duration_seconds` 0.
    pub fn finish(&self, ctx: &SummaryCtx<'_>) -> MeetingSummaryObject {
        let start = self.first_timestamp().unwrap_or(ctx.end_time);
        let m = &self.metrics;
        MeetingSummaryObject {
            meeting_id: ctx.meeting_id.to_owned(),
            meeting_instance_id: ctx.meeting_instance_id.to_owned(),
            meeting_type: ctx.meeting_type.to_owned(),
            start_time: format_ms(start),
            end_time: format_ms(ctx.end_time),
            duration_seconds: (ctx.end_time - start).div_euclid(1000).max(0),
            participant_count: self.participant_count(),
            sample_count: self.sample_count,
            metrics: SummaryMetrics {
                audio: m.audio.as_deref().map(group_stats),
                video: m.video.as_deref().map(group_stats),
                screen_share: m.screen_share.as_deref().map(group_stats),
                cpu_usage: m.cpu_usage.stats(),
            },
            quality: self.quality(ctx.thresholds),
        }
    }

    fn quality(&self, thresholds: &Thresholds) -> SummaryQuality {
        let mut mos_sum = Mean::default();
        let mut counts = GradeCounts {
            good: 0,
            fair: 0,
            poor: 0,
            bad: 0,
        };
        let mut poor = Vec::new();
        for (id, acc) in &self.participants {
            let q = acc.quality(thresholds);
            mos_sum.add(q.mos.get());
            match q.grade {
                Grade::Good => counts.good += 1,
                Grade::Fair => counts.fair += 1,
                Grade::Poor => counts.poor += 1,
                Grade::Bad => counts.bad += 1,
            }
            if matches!(q.grade, Grade::Poor | Grade::Bad) {
                poor.push(PoorParticipant {
                    participant_id: id.clone(),
                    user_name: acc.user_name().map(str::to_owned),
                    mos: q.mos,
                    grade: q.grade,
                    issues: q.issues,
                });
            }
        }
        // Participants come out of the map ordered by id, and the sort is stable, so equal MOS
        // values stay ordered by `participant_id`.
        poor.sort_by(|a, b| a.mos.get().total_cmp(&b.mos.get()));
        poor.truncate(MAX_POOR_PARTICIPANTS);
        let mos_avg = mos_sum.rounded().unwrap_or_default();
        SummaryQuality {
            mos_avg,
            grade: grade(mos_avg.get()),
            grade_counts: counts,
            poor_participants: poor,
        }
    }

    /// A rough size in bytes, for memory accounting: dominated by the exact values kept per
    /// field (at most [`crate::distribution::EXACT_CAP`] each) and the participants.
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.metrics.approx_bytes()
            + self
                .participants
                .iter()
                .map(|(id, acc)| id.len() + acc.approx_bytes())
                .sum::<usize>()
    }
}

fn group_stats(g: &GroupAcc<Distribution>) -> GroupStats {
    GroupStats {
        bitrate: g.bitrate.stats(),
        latency: g.latency.stats(),
        jitter: g.jitter.stats(),
        packet_loss: g.packet_loss.stats(),
        resolution: g.resolution.most_frequent().map(str::to_owned),
        frame_rate: g.frame_rate.stats(),
    }
}

#[cfg(test)]
mod tests {
    use qss_domain::Num;
    use qss_domain::event::Issue;
    use qss_domain::sample::{MediaMetrics, MeetingType, ParticipantMetrics};

    use super::*;

    const T0: Millis = 1_705_314_600_000; // 2024-01-15T10:30:00Z

    fn sample(participant: &str, ts: Millis, latency: f64, loss: f64) -> ParticipantQos {
        ParticipantQos {
            meeting_id: "m1".into(),
            meeting_type: MeetingType::Webinar,
            participant_id: participant.into(),
            user_id: None,
            user_name: Some(format!("user {participant}")),
            timestamp: ts,
            metrics: ParticipantMetrics {
                audio: Some(MediaMetrics {
                    bitrate: 64.0,
                    latency,
                    jitter: 2.0,
                    packet_loss: loss,
                    resolution: None,
                    frame_rate: None,
                }),
                ..ParticipantMetrics::default()
            },
        }
    }

    fn finish(acc: &MeetingSummaryAcc, end_time: Millis) -> MeetingSummaryObject {
        acc.finish(&SummaryCtx {
            meeting_id: "m1",
            meeting_instance_id: "mi1",
            meeting_type: "webinar",
            end_time,
            thresholds: &Thresholds::default(),
        })
    }

    #[test]
    fn times_counts_and_stats_cover_the_whole_instance() {
        let mut acc = MeetingSummaryAcc::new();
        acc.add(&sample("a", T0 + 10_000, 20.0, 0.0));
        acc.add(&sample("b", T0 + 1_500, 40.0, 0.0));
        acc.add(&sample("a", T0 + 95_999, 60.0, 0.0));
        assert_eq!(acc.last_timestamp(), Some(T0 + 95_999));

        let s = finish(&acc, acc.last_timestamp().unwrap());
        assert_eq!(s.meeting_type, "webinar");
        assert_eq!(s.start_time, "2024-01-15T10:30:01Z");
        assert_eq!(s.end_time, "2024-01-15T10:31:35Z");
        assert_eq!(s.duration_seconds, 94);
        assert_eq!((s.participant_count, s.sample_count), (2, 3));
        let latency = s.metrics.audio.unwrap().latency.unwrap();
        assert_eq!(latency.avg, Num(40.0));
        assert_eq!((latency.min, latency.max), (Num(20.0), Num(60.0)));
        assert_eq!((latency.p50, latency.p95), (Num(40.0), Num(60.0)));
        assert!(s.metrics.video.is_none() && s.metrics.cpu_usage.is_none());
    }

    #[test]
    fn poor_participants_are_listed_lowest_mos_first_then_by_id() {
        let mut acc = MeetingSummaryAcc::new();
        // With jitter 2: 20/0 scores 4.39 (good), 400/10 about 2.0 (bad), 388/0 about 3.36
        // (poor).
        acc.add(&sample("good", T0, 20.0, 0.0));
        acc.add(&sample("zz-bad", T0, 400.0, 10.0));
        acc.add(&sample("aa-bad", T0, 400.0, 10.0));
        acc.add(&sample("poor", T0, 388.0, 0.0));
        let q = finish(&acc, T0).quality;

        let order: Vec<&str> = q
            .poor_participants
            .iter()
            .map(|p| p.participant_id.as_str())
            .collect();
        assert_eq!(order, ["aa-bad", "zz-bad", "poor"]);
        assert_eq!(q.grade_counts.good, 1);
        assert_eq!(q.grade_counts.poor, 1);
        assert_eq!(q.grade_counts.bad, 2);
        assert_eq!(q.grade_counts.fair, 0);
        let first = &q.poor_participants[0];
        assert_eq!(first.user_name.as_deref(), Some("user aa-bad"));
        assert!(first.issues.contains(&Issue::HighPacketLoss));

        let mean: f64 = [
            4.39,
            first.mos.get(),
            first.mos.get(),
            q.poor_participants[2].mos.get(),
        ]
        .iter()
        .sum::<f64>()
            / 4.0;
        assert_eq!(q.mos_avg, Num::rounded(mean));
        assert_eq!(q.grade, grade(q.mos_avg.get()));
    }

    #[test]
    fn at_most_ten_poor_participants_are_listed() {
        let mut acc = MeetingSummaryAcc::new();
        for i in 0..15 {
            acc.add(&sample(&format!("p{i:02}"), T0, 400.0, 10.0));
        }
        let q = finish(&acc, T0).quality;
        assert_eq!(q.poor_participants.len(), 10);
        assert_eq!(q.poor_participants[9].participant_id, "p09");
        assert_eq!(q.grade_counts.bad, 15);
    }

    #[test]
    fn grade_counts_always_have_four_keys() {
        let mut acc = MeetingSummaryAcc::new();
        acc.add(&sample("a", T0, 20.0, 0.0));
        let json = serde_json::to_value(finish(&acc, T0).quality.grade_counts).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"good": 1, "fair": 0, "poor": 0, "bad": 0})
        );
    }

    #[test]
    fn a_meeting_ended_time_before_the_first_sample_gives_zero_duration() {
        let mut acc = MeetingSummaryAcc::new();
        acc.add(&sample("a", T0, 20.0, 0.0));
        assert_eq!(finish(&acc, T0 - 5_000).duration_seconds, 0);
    }

    #[test]
    fn the_summary_accumulator_survives_a_round_trip_through_json() {
        let mut acc = MeetingSummaryAcc::new();
        acc.add(&sample("a", T0, 20.0, 0.0));
        acc.add(&sample("b", T0 + 1, 30.0, 1.0));
        let json = serde_json::to_string(&acc).unwrap();
        assert_eq!(
            serde_json::from_str::<MeetingSummaryAcc>(&json).unwrap(),
            acc
        );
    }
}
