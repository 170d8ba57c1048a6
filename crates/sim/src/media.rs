//! What a participant's client sends: audio always, video and screen share when on. Video adapts
//! to loss like a real encoder: the bitrate backs off and the resolution and frame rate step down
//! a ladder under loss, and climb back after a run of clean samples. CPU load follows the encoder.

use qss_domain::num::round2;
use qss_domain::sample::{MediaMetrics, ParticipantMetrics};
use rand::Rng;
use rand::rngs::StdRng;

use crate::network::{Measure, normal};

/// Video steps, best first: resolution, frame rate, target kbps, CPU cost in percent.
const LADDER: [(&str, f64, f64, f64); 4] = [
    ("1280x720", 30.0, 1800.0, 22.0),
    ("960x540", 30.0, 1000.0, 15.0),
    ("640x360", 24.0, 550.0, 9.0),
    ("320x180", 15.0, 200.0, 4.0),
];

/// Loss above which the encoder steps down, and below which a clean sample counts towards
/// stepping back up.
const STEP_DOWN_LOSS: f64 = 2.0;
const CLEAN_LOSS: f64 = 0.5;
/// Clean samples in a row before stepping up.
const CLEAN_RUN: u32 = 3;

#[derive(Debug, Clone)]
pub struct Media {
    pub video: bool,
    pub screen_share: bool,
    /// Index into [`LADDER`].
    level: usize,
    clean_run: u32,
    /// The encoder's current share of the step's target bitrate, backed off under loss.
    rate_share: f64,
    /// CPU used by everything else on the machine, drifting.
    base_cpu: f64,
}

impl Media {
    pub fn new(video: bool, screen_share: bool, rng: &mut StdRng) -> Media {
        Media {
            video,
            screen_share,
            level: 0,
            clean_run: 0,
            rate_share: 1.0,
            base_cpu: rng.gen_range(10.0..50.0),
        }
    }

    /// The metrics of one sample, given what the network did over the period.
    pub fn sample(&mut self, net: Measure, rng: &mut StdRng) -> ParticipantMetrics {
        self.adapt(net.packet_loss);
        self.base_cpu = (self.base_cpu + 3.0 * normal(rng)).clamp(5.0, 70.0);

        let audio_rate = if net.packet_loss > STEP_DOWN_LOSS {
            32.0
        } else {
            48.0
        };
        let audio = group(audio_rate * jitter_factor(rng), net, None, None);

        let (resolution, full_fps, target, cost) = LADDER[self.level];
        let mut cpu = self.base_cpu;
        let video = self.video.then(|| {
            cpu += cost;
            // Lost packets cost frames: a lossy path delivers fewer of them.
            let fps = full_fps * (1.0 - 2.0 * net.packet_loss / 100.0) + normal(rng);
            let rate = target * self.rate_share * (1.0 - net.packet_loss / 100.0);
            group(
                rate * jitter_factor(rng),
                bigger_packets(net),
                Some(resolution.to_string()),
                Some(fps),
            )
        });
        let screen_share = self.screen_share.then(|| {
            cpu += 8.0;
            // Screen content is mostly static: a low frame rate is normal, not a problem.
            let rate = 300.0 * self.rate_share * jitter_factor(rng);
            group(
                rate,
                bigger_packets(net),
                Some("1920x1080".to_string()),
                Some(5.0 + rng.gen_range(0.0..5.0)),
            )
        });
        ParticipantMetrics {
            audio: Some(audio),
            video,
            screen_share,
            cpu_usage: Some(round2((cpu + 2.0 * normal(rng)).clamp(0.0, 100.0))),
        }
    }

    fn adapt(&mut self, loss: f64) {
        if loss > STEP_DOWN_LOSS {
            self.clean_run = 0;
            self.rate_share = (self.rate_share * 0.85).max(0.3);
            self.level = (self.level + 1).min(LADDER.len() - 1);
        } else if loss < CLEAN_LOSS {
            self.clean_run += 1;
            self.rate_share = (self.rate_share * 1.08).min(1.0);
            if self.clean_run >= CLEAN_RUN && self.level > 0 {
                self.level -= 1;
                self.clean_run = 0;
            }
        }
    }
}

/// Video and screen-share packets are larger and more numerous than audio ones: a little more
/// jitter and loss on the same path.
fn bigger_packets(net: Measure) -> Measure {
    Measure {
        latency: net.latency + 2.0,
        jitter: net.jitter * 1.15,
        packet_loss: net.packet_loss * 1.1,
    }
}

fn jitter_factor(rng: &mut StdRng) -> f64 {
    rng.gen_range(0.9..1.1)
}

/// One media group, clamped to the ranges the server accepts (SPEC 4) and rounded.
fn group(
    bitrate: f64,
    net: Measure,
    resolution: Option<String>,
    frame_rate: Option<f64>,
) -> MediaMetrics {
    MediaMetrics {
        bitrate: round2(bitrate.clamp(0.0, 100_000.0)),
        latency: round2(net.latency.clamp(0.0, 60_000.0)),
        jitter: round2(net.jitter.clamp(0.0, 60_000.0)),
        packet_loss: round2(net.packet_loss.clamp(0.0, 100.0)),
        resolution,
        frame_rate: frame_rate.map(|f| round2(f.clamp(0.0, 240.0))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn measure(packet_loss: f64) -> Measure {
        Measure {
            latency: 50.0,
            jitter: 5.0,
            packet_loss,
        }
    }

    #[test]
    fn video_steps_down_under_loss_and_back_up_when_clean() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut media = Media::new(true, false, &mut rng);
        let resolution = |m: &ParticipantMetrics| m.video.as_ref().unwrap().resolution.clone();
        for _ in 0..5 {
            media.sample(measure(10.0), &mut rng);
        }
        let lossy = media.sample(measure(10.0), &mut rng);
        assert_eq!(resolution(&lossy).as_deref(), Some("320x180"));
        for _ in 0..20 {
            media.sample(measure(0.0), &mut rng);
        }
        let clean = media.sample(measure(0.0), &mut rng);
        assert_eq!(resolution(&clean).as_deref(), Some("1280x720"));
    }
}
