//! Meetings and webinars: each slot runs one meeting after another, with a pause between them.
//! Participants join over the first part of a meeting and some leave early; the meeting ends
//! with a `meeting_ended` sample.

use qss_domain::Sample;
use qss_domain::sample::{MeetingEnded, MeetingType, ParticipantQos};
use rand::Rng;

use crate::media::Media;
use crate::network::Link;
use crate::{Ctx, NAMES};

/// Share of meetings that are webinars, and how much larger a webinar is than a meeting.
const WEBINAR_CHANCE: f64 = 0.2;
const WEBINAR_SIZE_FACTOR: usize = 3;
/// Webinar panelists, who send video; attendees send audio only.
const PANELISTS: usize = 3;

pub(crate) struct MeetingSlot {
    index: usize,
    serial: u32,
    next_start: i64,
    current: Option<Meeting>,
}

struct Meeting {
    id: String,
    kind: MeetingType,
    end: i64,
    participants: Vec<Participant>,
}

struct Participant {
    id: String,
    user_id: String,
    user_name: String,
    next_due: i64,
    leave: i64,
    link: Link,
    media: Media,
}

impl MeetingSlot {
    pub(crate) fn new(index: usize, first_start: i64) -> MeetingSlot {
        MeetingSlot {
            index,
            serial: 0,
            next_start: first_start,
            current: None,
        }
    }

    pub(crate) fn advance(&mut self, now: i64, ctx: &mut Ctx<'_>, out: &mut Vec<Sample>) {
        loop {
            let Some(meeting) = &mut self.current else {
                if self.next_start > now {
                    return;
                }
                self.current = Some(self.start(ctx));
                continue;
            };
            meeting.emit_due(now.min(meeting.end - 1), ctx, out);
            if meeting.end > now {
                return;
            }
            let end = meeting.end;
            self.end_now(end, out);
            // A short pause before the slot's next meeting.
            self.next_start = end + ctx.rng.gen_range(0..=30_000);
        }
    }

    pub(crate) fn end_now(&mut self, now: i64, out: &mut Vec<Sample>) {
        if let Some(meeting) = self.current.take() {
            out.push(Sample::MeetingEnded(MeetingEnded {
                meeting_id: meeting.id,
                timestamp: now,
            }));
        }
    }

    fn start(&mut self, ctx: &mut Ctx<'_>) -> Meeting {
        self.serial += 1;
        let start = self.next_start;
        let length = ctx.length_around(ctx.config.mean_meeting_ms);
        let end = start + length;
        let webinar = ctx.rng.gen_bool(WEBINAR_CHANCE);
        let mean = ctx.config.participants.max(1);
        let size = if webinar {
            mean * WEBINAR_SIZE_FACTOR
        } else {
            ctx.rng.gen_range(1..=mean * 2 - 1).max(2).min(mean * 2)
        };
        let id = format!("sim-{}-m{}-{}", ctx.run_tag, self.index, self.serial);
        let sharer = ctx.rng.gen_bool(0.4).then_some(0);
        let participants = (0..size)
            .map(|i| {
                // The host is there from the start; others trickle in over the first fifth,
                // within a minute at most, as people do.
                let join = if i == 0 {
                    start
                } else {
                    start + ctx.rng.gen_range(0..=(length / 5).min(60_000))
                };
                let leave = if ctx.rng.gen_bool(0.2) {
                    ctx.rng.gen_range(join..=end)
                } else {
                    end
                };
                let video = if webinar {
                    i < PANELISTS
                } else {
                    ctx.rng.gen_bool(0.7)
                };
                let name = NAMES[(self.serial as usize * 7 + i) % NAMES.len()];
                Participant {
                    id: format!("{id}-p{i}"),
                    user_id: format!("sim-u-{}-{}", self.index, i),
                    user_name: format!("{name} {i}"),
                    next_due: ctx.phase(join),
                    leave,
                    link: ctx.config.network.link(ctx.rng),
                    media: Media::new(video, sharer == Some(i), ctx.rng),
                }
            })
            .collect();
        Meeting {
            id,
            kind: if webinar {
                MeetingType::Webinar
            } else {
                MeetingType::Meeting
            },
            end,
            participants,
        }
    }
}

impl Meeting {
    fn emit_due(&mut self, until: i64, ctx: &mut Ctx<'_>, out: &mut Vec<Sample>) {
        let interval = ctx.config.sample_interval_ms.max(1);
        for p in &mut self.participants {
            while p.next_due <= until && p.next_due < p.leave {
                let net = p.link.measure(ctx.rng);
                out.push(Sample::ParticipantQos(ParticipantQos {
                    meeting_id: self.id.clone(),
                    meeting_type: self.kind,
                    participant_id: p.id.clone(),
                    user_id: Some(p.user_id.clone()),
                    user_name: Some(p.user_name.clone()),
                    timestamp: p.next_due,
                    metrics: p.media.sample(net, ctx.rng),
                }));
                p.next_due += interval;
            }
        }
    }
}
