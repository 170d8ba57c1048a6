//! The shape shared by window and summary accumulators: three optional media groups of five
//! numbers and a resolution, plus `cpu_usage`. Windows keep a [`Mean`] per number, summaries a
//! [`Distribution`]; walking a sample's groups is written once here for both.

use qss_domain::sample::{MediaMetrics, ParticipantMetrics};
use qss_domain::timefmt::Millis;
use serde::{Deserialize, Serialize};

use crate::distribution::Distribution;
use crate::pick::Mode;
use crate::sum::Mean;

/// What is kept per number: something values can be added to and that merges with its like.
pub(crate) trait FieldAcc: Default + Clone {
    fn add(&mut self, x: f64);
    fn merge(&mut self, other: &Self);
    /// A rough heap-and-inline size, for memory accounting.
    fn approx_bytes(&self) -> usize;
}

impl FieldAcc for Mean {
    fn add(&mut self, x: f64) {
        Mean::add(self, x);
    }
    fn merge(&mut self, other: &Self) {
        Mean::merge(self, other);
    }
    fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
    }
}

impl FieldAcc for Distribution {
    fn add(&mut self, x: f64) {
        Distribution::add(self, x);
    }
    fn merge(&mut self, other: &Self) {
        Distribution::merge(self, other);
    }
    fn approx_bytes(&self) -> usize {
        Distribution::approx_bytes(self)
    }
}

/// One media group. It exists once some sample carried the group; its four required numbers
/// then always have values, `frame_rate` and `resolution` only if some sample carried them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct GroupAcc<A> {
    pub(crate) bitrate: A,
    pub(crate) latency: A,
    pub(crate) jitter: A,
    pub(crate) packet_loss: A,
    pub(crate) frame_rate: A,
    pub(crate) resolution: Mode,
}

impl<A: FieldAcc> GroupAcc<A> {
    fn add(&mut self, m: &MediaMetrics, ts: Millis) {
        self.bitrate.add(m.bitrate);
        self.latency.add(m.latency);
        self.jitter.add(m.jitter);
        self.packet_loss.add(m.packet_loss);
        if let Some(fr) = m.frame_rate {
            self.frame_rate.add(fr);
        }
        self.resolution.add(ts, m.resolution.as_deref());
    }

    fn merge(&mut self, other: &Self) {
        self.bitrate.merge(&other.bitrate);
        self.latency.merge(&other.latency);
        self.jitter.merge(&other.jitter);
        self.packet_loss.merge(&other.packet_loss);
        self.frame_rate.merge(&other.frame_rate);
        self.resolution.merge(&other.resolution);
    }

    fn approx_bytes(&self) -> usize {
        [
            &self.bitrate,
            &self.latency,
            &self.jitter,
            &self.packet_loss,
            &self.frame_rate,
        ]
        .iter()
        .map(|a| a.approx_bytes())
        .sum::<usize>()
            + self.resolution.distinct() * 64
    }
}

/// The metrics of many participant samples, group by group.
///
/// Groups are boxed: a window accumulator holds three, most participants send one or two
/// (screen share is rare), and an absent group then costs 8 bytes instead of 144.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct MetricsAcc<A> {
    pub(crate) audio: Option<Box<GroupAcc<A>>>,
    pub(crate) video: Option<Box<GroupAcc<A>>>,
    pub(crate) screen_share: Option<Box<GroupAcc<A>>>,
    pub(crate) cpu_usage: A,
}

impl<A: FieldAcc> MetricsAcc<A> {
    pub(crate) fn add(&mut self, m: &ParticipantMetrics, ts: Millis) {
        add_group(&mut self.audio, m.audio.as_ref(), ts);
        add_group(&mut self.video, m.video.as_ref(), ts);
        add_group(&mut self.screen_share, m.screen_share.as_ref(), ts);
        if let Some(cpu) = m.cpu_usage {
            self.cpu_usage.add(cpu);
        }
    }

    pub(crate) fn merge(&mut self, other: &Self) {
        merge_group(&mut self.audio, other.audio.as_deref());
        merge_group(&mut self.video, other.video.as_deref());
        merge_group(&mut self.screen_share, other.screen_share.as_deref());
        self.cpu_usage.merge(&other.cpu_usage);
    }

    pub(crate) fn approx_bytes(&self) -> usize {
        [&self.audio, &self.video, &self.screen_share]
            .iter()
            .filter_map(|g| g.as_deref())
            .map(GroupAcc::approx_bytes)
            .sum::<usize>()
            + self.cpu_usage.approx_bytes()
    }
}

fn add_group<A: FieldAcc>(
    acc: &mut Option<Box<GroupAcc<A>>>,
    m: Option<&MediaMetrics>,
    ts: Millis,
) {
    if let Some(m) = m {
        acc.get_or_insert_with(Box::default).add(m, ts);
    }
}

fn merge_group<A: FieldAcc>(acc: &mut Option<Box<GroupAcc<A>>>, other: Option<&GroupAcc<A>>) {
    match (acc.as_mut(), other) {
        (_, None) => {}
        (None, Some(other)) => *acc = Some(Box::new(other.clone())),
        (Some(ours), Some(other)) => ours.merge(other),
    }
}
