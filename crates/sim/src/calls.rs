//! Phone calls: each slot runs one call after another. A call samples both directions, each on
//! its own path, with the codec's bitrate and the handset's own MOS estimate, and ends with a
//! `call_ended` per direction.

use qss_domain::Sample;
use qss_domain::num::round2;
use qss_domain::sample::{CallEnded, CallMetrics, CallQos, Direction};
use rand::Rng;

use crate::Ctx;
use crate::network::Link;

/// Codec name, bitrate in kbps, and its equipment impairment (E-model `Ie`), which lowers the
/// handset's MOS estimate below the network-only score the server computes.
const CODECS: [(&str, f64, f64); 4] = [
    ("OPUS", 32.0, 0.0),
    ("G.711 PCMU", 64.0, 0.0),
    ("G.722", 64.0, 0.0),
    ("G.729", 8.0, 10.0),
];

pub(crate) struct CallSlot {
    index: usize,
    serial: u32,
    next_start: i64,
    current: Option<Call>,
}

struct Call {
    id: String,
    caller: String,
    callee: String,
    codec: usize,
    end: i64,
    next_due: i64,
    outbound: Link,
    inbound: Link,
}

impl CallSlot {
    pub(crate) fn new(index: usize, first_start: i64) -> CallSlot {
        CallSlot {
            index,
            serial: 0,
            next_start: first_start,
            current: None,
        }
    }

    pub(crate) fn advance(&mut self, now: i64, ctx: &mut Ctx<'_>, out: &mut Vec<Sample>) {
        loop {
            let Some(call) = &mut self.current else {
                if self.next_start > now {
                    return;
                }
                self.current = Some(self.start(ctx));
                continue;
            };
            call.emit_due(now.min(call.end - 1), ctx, out);
            if call.end > now {
                return;
            }
            let end = call.end;
            self.end_now(end, out);
            self.next_start = end + ctx.rng.gen_range(0..=20_000);
        }
    }

    pub(crate) fn end_now(&mut self, now: i64, out: &mut Vec<Sample>) {
        if let Some(call) = self.current.take() {
            for direction in [Direction::Outbound, Direction::Inbound] {
                out.push(Sample::CallEnded(CallEnded {
                    call_id: call.id.clone(),
                    direction,
                    timestamp: now,
                }));
            }
        }
    }

    fn start(&mut self, ctx: &mut Ctx<'_>) -> Call {
        self.serial += 1;
        let start = self.next_start;
        let end = start + ctx.length_around(ctx.config.mean_call_ms);
        let number =
            |rng: &mut rand::rngs::StdRng| format!("+1555{:07}", rng.gen_range(0..10_000_000));
        Call {
            id: format!("sim-{}-c{}-{}", ctx.run_tag, self.index, self.serial),
            caller: number(ctx.rng),
            callee: number(ctx.rng),
            codec: ctx.rng.gen_range(0..CODECS.len()),
            end,
            next_due: ctx.phase(start),
            outbound: ctx.config.network.link(ctx.rng),
            inbound: ctx.config.network.link(ctx.rng),
        }
    }
}

impl Call {
    fn emit_due(&mut self, until: i64, ctx: &mut Ctx<'_>, out: &mut Vec<Sample>) {
        let (codec, bitrate, impairment) = CODECS[self.codec];
        while self.next_due <= until {
            for (direction, link) in [
                (Direction::Outbound, &mut self.outbound),
                (Direction::Inbound, &mut self.inbound),
            ] {
                let net = link.measure(ctx.rng);
                let (r, _) = qss_engine::r_and_mos(net.latency, net.jitter, net.packet_loss);
                let mos = mos_of_r(r - impairment);
                out.push(Sample::CallQos(CallQos {
                    call_id: self.id.clone(),
                    direction,
                    caller_number: Some(self.caller.clone()),
                    callee_number: Some(self.callee.clone()),
                    codec: Some(codec.to_string()),
                    timestamp: self.next_due,
                    metrics: CallMetrics {
                        bitrate: round2(bitrate * (1.0 - net.packet_loss / 100.0)),
                        latency: round2(net.latency.clamp(0.0, 60_000.0)),
                        jitter: round2(net.jitter.clamp(0.0, 60_000.0)),
                        packet_loss: round2(net.packet_loss.clamp(0.0, 100.0)),
                        mos: Some(round2(mos.clamp(1.0, 5.0))),
                    },
                }));
            }
            self.next_due += ctx.config.sample_interval_ms.max(1);
        }
    }
}

/// The E-model's R to MOS mapping (ITU-T G.107), for an R already lowered by the codec.
fn mos_of_r(r: f64) -> f64 {
    if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        1.0 + 0.035 * r + 7e-6 * r * (r - 60.0) * (100.0 - r)
    }
}
