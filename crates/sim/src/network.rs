//! Network paths: a profile (wired, home Wi-Fi, congested cellular, lossy) and the state of one
//! path over time. Loss is bursty (a Gilbert-Elliott chain run packet by packet), latency and
//! jitter drift as mean-reverting random walks and now and then spike for a few samples.

use rand::Rng;
use rand::rngs::StdRng;

/// How many packets one sample period is modelled with; the loss percent is the share of them
/// lost, so bursts show up as uneven loss from one sample to the next.
const PACKETS_PER_SAMPLE: u32 = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileKind {
    Wired,
    Wifi,
    CellularCongested,
    Lossy,
}

/// The parameters of a kind of network path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    pub kind: ProfileKind,
    /// Round-trip latency the path reverts to, ms.
    pub base_latency: f64,
    pub base_jitter: f64,
    /// Gilbert-Elliott: per packet, the chance to go from the good to the bad state and back.
    pub p_good_to_bad: f64,
    pub p_bad_to_good: f64,
    /// Per packet loss probability in each state.
    pub loss_in_good: f64,
    pub loss_in_bad: f64,
    /// Standard deviation of the random walk of latency per sample, ms.
    pub drift: f64,
    /// Chance per sample that a spike starts, and its mean extra latency, ms.
    pub spike_chance: f64,
    pub spike_latency: f64,
}

impl Profile {
    pub fn of(kind: ProfileKind) -> Profile {
        match kind {
            ProfileKind::Wired => Profile {
                kind,
                base_latency: 18.0,
                base_jitter: 1.5,
                p_good_to_bad: 0.0005,
                p_bad_to_good: 0.5,
                loss_in_good: 0.0,
                loss_in_bad: 0.3,
                drift: 1.0,
                spike_chance: 0.005,
                spike_latency: 40.0,
            },
            ProfileKind::Wifi => Profile {
                kind,
                base_latency: 38.0,
                base_jitter: 5.0,
                p_good_to_bad: 0.002,
                p_bad_to_good: 0.4,
                loss_in_good: 0.0005,
                loss_in_bad: 0.4,
                drift: 3.0,
                spike_chance: 0.01,
                spike_latency: 60.0,
            },
            ProfileKind::CellularCongested => Profile {
                kind,
                base_latency: 230.0,
                base_jitter: 45.0,
                p_good_to_bad: 0.03,
                p_bad_to_good: 0.2,
                loss_in_good: 0.01,
                loss_in_bad: 0.5,
                drift: 15.0,
                spike_chance: 0.08,
                spike_latency: 250.0,
            },
            ProfileKind::Lossy => Profile {
                kind,
                base_latency: 130.0,
                base_jitter: 30.0,
                p_good_to_bad: 0.05,
                p_bad_to_good: 0.2,
                loss_in_good: 0.02,
                loss_in_bad: 0.6,
                drift: 10.0,
                spike_chance: 0.05,
                spike_latency: 150.0,
            },
        }
    }
}

/// What a path measured over one sample period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measure {
    pub latency: f64,
    pub jitter: f64,
    /// Percent.
    pub packet_loss: f64,
}

/// The evolving state of one path.
#[derive(Debug, Clone)]
pub struct Link {
    profile: Profile,
    in_bad_state: bool,
    /// Offset of latency from the base, from the random walk.
    latency_drift: f64,
    jitter_drift: f64,
    /// Samples left in the current spike, and its extra latency.
    spike_left: u32,
    spike_extra: f64,
}

impl Link {
    pub fn new(profile: Profile) -> Link {
        Link {
            profile,
            in_bad_state: false,
            latency_drift: 0.0,
            jitter_drift: 0.0,
            spike_left: 0,
            spike_extra: 0.0,
        }
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// Advances the path by one sample period.
    pub fn measure(&mut self, rng: &mut StdRng) -> Measure {
        let p = self.profile;
        // Mean reversion keeps the walk near the base however long a run lasts.
        self.latency_drift = 0.9 * self.latency_drift + p.drift * normal(rng);
        self.jitter_drift = 0.9 * self.jitter_drift + 0.3 * p.drift * normal(rng);
        if self.spike_left == 0 && rng.gen_bool(p.spike_chance) {
            self.spike_left = rng.gen_range(1..=4);
            self.spike_extra = p.spike_latency * exponential(rng);
        }
        let spike = if self.spike_left > 0 {
            self.spike_left -= 1;
            self.spike_extra
        } else {
            0.0
        };

        let mut lost = 0;
        for _ in 0..PACKETS_PER_SAMPLE {
            let flip = if self.in_bad_state {
                p.p_bad_to_good
            } else {
                p.p_good_to_bad
            };
            if rng.gen_bool(flip) {
                self.in_bad_state = !self.in_bad_state;
            }
            let loss = if self.in_bad_state {
                p.loss_in_bad
            } else {
                p.loss_in_good
            };
            if rng.gen_bool(loss) {
                lost += 1;
            }
        }

        let latency = (p.base_latency + self.latency_drift + spike).max(p.base_latency * 0.5);
        // Spikes come with queueing, which shows as jitter too.
        let jitter = (p.base_jitter + self.jitter_drift + 0.25 * spike).max(0.2 * p.base_jitter);
        Measure {
            latency,
            jitter,
            packet_loss: 100.0 * f64::from(lost) / f64::from(PACKETS_PER_SAMPLE),
        }
    }
}

/// A standard normal deviate (Box-Muller).
pub fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.r#gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// An exponential deviate with mean 1.
pub fn exponential(rng: &mut StdRng) -> f64 {
    let u: f64 = rng.gen_range(f64::EPSILON..1.0);
    -u.ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn mean_loss(kind: ProfileKind) -> f64 {
        let mut rng = StdRng::seed_from_u64(7);
        let mut link = Link::new(Profile::of(kind));
        let n = 2000;
        (0..n)
            .map(|_| link.measure(&mut rng).packet_loss)
            .sum::<f64>()
            / f64::from(n)
    }

    #[test]
    fn wired_loses_almost_nothing_and_lossy_loses_a_lot() {
        assert!(mean_loss(ProfileKind::Wired) < 0.5);
        assert!(mean_loss(ProfileKind::Lossy) > 5.0);
    }
}
