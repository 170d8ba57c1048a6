//! A deterministic generator of realistic telemetry (SPEC 4) for `qss simulate`: meetings and
//! webinars of varied sizes that start and end over time, participants on their own network
//! paths, and phone calls with codecs, both directions.
//!
//! Pure: no IO and no clock. The caller owns time and asks [`Simulation::step`] for the samples
//! due by `now`; the same config, seed and sequence of `now` give the same samples.

mod calls;
pub mod media;
mod meetings;
pub mod network;

use qss_domain::Sample;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use calls::CallSlot;
use meetings::MeetingSlot;
use network::{Link, Profile, ProfileKind};

/// Which networks participants and callers are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMix {
    /// Wired and home Wi-Fi.
    Good,
    /// Mostly good, some congested cellular and lossy paths.
    Mixed,
    /// Congested cellular and lossy paths.
    Poor,
}

impl NetworkMix {
    /// A profile drawn for one new path.
    fn draw(self, rng: &mut StdRng) -> Profile {
        use ProfileKind::*;
        let kinds: &[(ProfileKind, u32)] = match self {
            NetworkMix::Good => &[(Wired, 1), (Wifi, 1)],
            NetworkMix::Mixed => &[
                (Wired, 35),
                (Wifi, 35),
                (CellularCongested, 15),
                (Lossy, 15),
            ],
            NetworkMix::Poor => &[(CellularCongested, 1), (Lossy, 1)],
        };
        let total: u32 = kinds.iter().map(|(_, w)| w).sum();
        let mut pick = rng.gen_range(0..total);
        for (kind, weight) in kinds {
            if pick < *weight {
                return Profile::of(*kind);
            }
            pick -= weight;
        }
        Profile::of(kinds[0].0)
    }

    fn link(self, rng: &mut StdRng) -> Link {
        Link::new(self.draw(rng))
    }
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Meetings running at once; each slot runs one meeting after another.
    pub meetings: usize,
    /// Mean participants of a meeting (webinars are larger).
    pub participants: usize,
    /// Phone calls running at once.
    pub calls: usize,
    /// Every participant and call direction samples this often.
    pub sample_interval_ms: i64,
    pub network: NetworkMix,
    /// Mean meeting length; lengths vary from half to one and a half of it.
    pub mean_meeting_ms: i64,
    /// Mean call length, varying the same way.
    pub mean_call_ms: i64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            meetings: 3,
            participants: 5,
            calls: 2,
            sample_interval_ms: 5_000,
            network: NetworkMix::Mixed,
            mean_meeting_ms: 10 * 60_000,
            mean_call_ms: 3 * 60_000,
        }
    }
}

/// The whole simulated world.
pub struct Simulation {
    config: SimConfig,
    rng: StdRng,
    meetings: Vec<MeetingSlot>,
    calls: Vec<CallSlot>,
    /// Distinguishes runs with different seeds, so their ids never collide on one server.
    run_tag: String,
}

impl Simulation {
    pub fn new(config: SimConfig, seed: u64, start_ms: i64) -> Simulation {
        let mut rng = StdRng::seed_from_u64(seed);
        let run_tag = format!("{seed:x}-{:x}", start_ms / 1000);
        let interval = config.sample_interval_ms.max(1);
        // Staggered starts, so meetings do not all begin (and end) together.
        let meetings = (0..config.meetings)
            .map(|i| MeetingSlot::new(i, start_ms + rng.gen_range(0..interval * 3)))
            .collect();
        let calls = (0..config.calls)
            .map(|i| CallSlot::new(i, start_ms + rng.gen_range(0..interval * 6)))
            .collect();
        Simulation {
            config,
            rng,
            meetings,
            calls,
            run_tag,
        }
    }

    /// Every sample due at or before `now_ms` not returned yet, in timestamp order.
    pub fn step(&mut self, now_ms: i64) -> Vec<Sample> {
        let mut out = Vec::new();
        let mut ctx = Ctx {
            config: &self.config,
            rng: &mut self.rng,
            run_tag: &self.run_tag,
        };
        for slot in &mut self.meetings {
            slot.advance(now_ms, &mut ctx, &mut out);
        }
        for slot in &mut self.calls {
            slot.advance(now_ms, &mut ctx, &mut out);
        }
        out.sort_by_key(Sample::timestamp);
        out
    }

    /// Samples due by `now_ms`, then ends every running meeting and call at `now_ms`, so that
    /// the server can summarize them without waiting for its timeouts.
    pub fn finish(&mut self, now_ms: i64) -> Vec<Sample> {
        let mut out = self.step(now_ms);
        for slot in &mut self.meetings {
            slot.end_now(now_ms, &mut out);
        }
        for slot in &mut self.calls {
            slot.end_now(now_ms, &mut out);
        }
        out
    }
}

/// What every slot needs to create and advance its meetings and calls.
struct Ctx<'a> {
    config: &'a SimConfig,
    rng: &'a mut StdRng,
    run_tag: &'a str,
}

impl Ctx<'_> {
    /// A length around `mean`, from half to one and a half of it.
    fn length_around(&mut self, mean: i64) -> i64 {
        let mean = mean.max(2);
        self.rng.gen_range(mean / 2..=mean + mean / 2)
    }

    /// A first sample time within one interval of `from`, so that clients are not in lockstep.
    fn phase(&mut self, from: i64) -> i64 {
        from + self.rng.gen_range(0..self.config.sample_interval_ms.max(1))
    }
}

const NAMES: [&str; 16] = [
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret", "Dennis",
    "Radia", "Linus", "Shafi", "Leslie", "Hedy", "Niklaus",
];

/// A sample as the ingest endpoint takes it (SPEC 4): the stored form, with the timestamp as an
/// RFC 3339 string to the millisecond, since idempotency keys count milliseconds.
pub fn to_wire(sample: &Sample) -> serde_json::Value {
    let mut value = serde_json::to_value(sample).unwrap_or_default();
    if let Some(obj) = value.as_object_mut() {
        let stamp = qss_domain::timefmt::format_ms_precise(sample.timestamp());
        obj.insert("timestamp".into(), serde_json::Value::String(stamp));
    }
    value
}

/// The JSON body of one ingest request.
pub fn batch_body(samples: &[Sample]) -> Vec<u8> {
    let samples: Vec<serde_json::Value> = samples.iter().map(to_wire).collect();
    serde_json::to_vec(&serde_json::json!({ "samples": samples })).unwrap_or_default()
}
