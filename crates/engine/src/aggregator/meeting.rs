//! One meeting's instances: routing of participant samples, per-participant windows, the
//! arrival timeout and the summary.

use std::collections::{HashMap, HashSet};

use qss_domain::EventType;
use qss_domain::sample::{MeetingEnded, ParticipantQos};

use super::small::{SmallMap, SortedSet};
use super::{
    Arrival, CLOSED_MEMORY_MS, Due, Emission, EmittedObject, InstanceChange, InstanceState, Millis,
    Placement, Series, WindowKey, participant_dedup_key, summary_dedup_key, window_due, window_of,
};
use crate::{MeetingSummaryAcc, ParticipantWindowAcc, SummaryCtx, WindowCtx};

#[derive(Debug, Default)]
pub(super) struct MeetingState {
    /// Instances whose summary is not committed, oldest first; only the last may be open.
    instances: Vec<Instance>,
    /// End of the latest instance whose summary is committed: samples at or before it count
    /// nowhere.
    closed_until: Option<Millis>,
    /// Whether that instance ended with `meeting_ended` (a repeat of it is a duplicate).
    closed_explicitly: bool,
}

#[derive(Debug)]
struct Instance {
    id: String,
    meeting_type: String,
    first_seq: i64,
    last_received_ms: Millis,
    end: Option<Millis>,
    ended_explicitly: bool,
    summary: MeetingSummaryAcc,
    participants: HashMap<String, ParticipantState>,
}

/// One participant of one instance; vectors rather than hash tables, which cost several times
/// their contents at this size (see [`super::small`]).
#[derive(Debug, Default)]
struct ParticipantState {
    /// Timestamps of the participant's samples in this instance: the dedup keys.
    seen: SortedSet<Millis>,
    /// Boxed, so that the vector holds 24-byte entries and a participant with no open window
    /// holds no accumulator.
    open: SmallMap<WindowKey, Box<ParticipantWindowAcc>>,
    /// Windows already emitted (or suppressed): later samples count only in the summary.
    done: SortedSet<WindowKey>,
}

impl MeetingState {
    pub(super) fn ingest(
        &mut self,
        account_id: &str,
        s: &ParticipantQos,
        at: Arrival,
        new_id: &mut dyn FnMut() -> String,
        changes: &mut Vec<InstanceChange>,
    ) -> Placement {
        if self.closed_until.is_some_and(|c| s.timestamp <= c) {
            // Its instance's summary is committed: it counts nowhere.
            return Placement::Store {
                route: String::new(),
            };
        }
        let idx = match self
            .instances
            .iter()
            .position(|i| i.end.is_none_or(|e| s.timestamp <= e))
        {
            Some(idx) => idx,
            None => {
                let inst = Instance::new(new_id(), s.meeting_type.as_str(), at.seq);
                changes.push(inst.change(account_id, &s.meeting_id, InstanceState::Open));
                self.instances.push(inst);
                self.instances.len() - 1
            }
        };
        let inst = &mut self.instances[idx];
        if inst.add(s, at) {
            Placement::Store {
                route: inst.id.clone(),
            }
        } else {
            Placement::Duplicate
        }
    }

    pub(super) fn end(
        &mut self,
        account_id: &str,
        e: &MeetingEnded,
        changes: &mut Vec<InstanceChange>,
    ) -> Placement {
        match self.instances.last_mut() {
            Some(inst) if inst.end.is_none() => {
                inst.end = Some(e.timestamp);
                inst.ended_explicitly = true;
                changes.push(inst.change(account_id, &e.meeting_id, InstanceState::Ended));
                Placement::Store {
                    route: inst.id.clone(),
                }
            }
            Some(inst) if inst.ended_explicitly => Placement::Duplicate,
            None if self.closed_explicitly => Placement::Duplicate,
            _ => Placement::Store {
                route: String::new(),
            },
        }
    }

    pub(super) fn restore(&mut self, c: &InstanceChange) {
        let mut inst = Instance::new(c.instance_id.clone(), &c.meeting_type, c.first_seq);
        inst.end = c.end_ts;
        inst.ended_explicitly = c.ended_explicitly;
        self.instances.push(inst);
        self.instances.sort_by_key(|i| i.first_seq);
    }

    pub(super) fn restore_closed(&mut self, end_ts: Millis, explicit: bool) {
        if self.closed_until.is_none_or(|c| end_ts >= c) {
            self.closed_until = Some(end_ts);
            self.closed_explicitly = explicit;
        }
    }

    pub(super) fn replay(&mut self, s: &ParticipantQos, route: &str, at: Arrival) {
        if let Some(inst) = self.instances.iter_mut().find(|i| i.id == route) {
            inst.add(s, at);
        }
    }

    pub(super) fn open_window_keys(&self, out: &mut dyn FnMut(String)) {
        for inst in &self.instances {
            for (pid, p) in &inst.participants {
                for w in p.open.keys() {
                    out(participant_dedup_key(&inst.id, pid, *w));
                }
            }
        }
    }

    pub(super) fn forget_emitted(&mut self, keys: &HashSet<String>) {
        for inst in &mut self.instances {
            if keys.contains(&summary_dedup_key(&inst.id)) {
                // Summary committed, instance row not yet closed: nothing of it is needed.
                inst.participants.clear();
                inst.summary = MeetingSummaryAcc::default();
                continue;
            }
            for (pid, p) in &mut inst.participants {
                let emitted: Vec<WindowKey> = p
                    .open
                    .keys()
                    .filter(|w| keys.contains(&participant_dedup_key(&inst.id, pid, **w)))
                    .copied()
                    .collect();
                for w in emitted {
                    p.open.remove(&w);
                    p.done.insert(w);
                }
            }
        }
    }

    /// Emits due windows and summaries; false when nothing of the meeting is worth keeping.
    pub(super) fn take_due(&mut self, meeting_id: &str, due: &mut Due<'_>) -> bool {
        let settings = due.settings;
        let grace = settings.aggregation_grace_seconds;
        let timeout_ms = i64::from(settings.meeting_end_timeout_seconds) * 1000;
        let thresholds = &settings.quality_thresholds;
        let emit_participant = settings.emits(EventType::ParticipantQos);
        for inst in &mut self.instances {
            for (pid, p) in &mut inst.participants {
                let ready: Vec<WindowKey> = p
                    .open
                    .keys()
                    .filter(|w| window_due(**w, grace) <= due.now)
                    .copied()
                    .collect();
                for w in ready {
                    let acc = p.open.remove(&w).expect("due window is open");
                    p.done.insert(w);
                    if emit_participant {
                        let object = acc.finish(&WindowCtx {
                            meeting_id,
                            meeting_instance_id: &inst.id,
                            meeting_type: &inst.meeting_type,
                            participant_id: pid,
                            window_start: w.1,
                            interval_seconds: w.0,
                            thresholds,
                        });
                        due.emissions.push(Emission {
                            account_id: due.account_id.to_string(),
                            dedup_key: participant_dedup_key(&inst.id, pid, w),
                            object: EmittedObject::Participant(object),
                        });
                    }
                }
            }
            if inst.end.is_none() && due.now.saturating_sub(inst.last_received_ms) >= timeout_ms {
                inst.end = Some(
                    inst.summary
                        .last_timestamp()
                        .unwrap_or(inst.last_received_ms),
                );
                due.changes
                    .push(inst.change(due.account_id, meeting_id, InstanceState::Ended));
            }
        }
        // Summaries, oldest first, once the window holding the end has closed.
        while let Some(end) = self.instances.first().and_then(|i| i.end) {
            let end_window = window_of(end, settings.aggregation_interval_seconds);
            if window_due(end_window, grace) > due.now {
                break;
            }
            let inst = self.instances.remove(0);
            if settings.emits(EventType::MeetingSummary) && inst.summary.sample_count() > 0 {
                let object = inst.summary.finish(&SummaryCtx {
                    meeting_id,
                    meeting_instance_id: &inst.id,
                    meeting_type: &inst.meeting_type,
                    end_time: end,
                    thresholds,
                });
                due.emissions.push(Emission {
                    account_id: due.account_id.to_string(),
                    dedup_key: summary_dedup_key(&inst.id),
                    object: EmittedObject::Summary(Box::new(object)),
                });
            }
            due.changes
                .push(inst.change(due.account_id, meeting_id, InstanceState::Closed));
            self.closed_until = Some(end);
            self.closed_explicitly = inst.ended_explicitly;
        }
        !self.instances.is_empty()
            || self
                .closed_until
                .is_some_and(|c| due.now - c < CLOSED_MEMORY_MS)
    }

    pub(super) fn replay_from(&self) -> Option<i64> {
        self.instances.iter().map(|i| i.first_seq).min()
    }

    pub(super) fn open_counts(&self) -> (usize, usize) {
        let windows = self
            .instances
            .iter()
            .flat_map(|i| i.participants.values())
            .map(|p| p.open.len())
            .sum();
        (windows, self.instances.len())
    }
}

impl Instance {
    fn new(id: String, meeting_type: &str, first_seq: i64) -> Self {
        Instance {
            id,
            meeting_type: meeting_type.to_string(),
            first_seq,
            last_received_ms: i64::MIN,
            end: None,
            ended_explicitly: false,
            summary: MeetingSummaryAcc::default(),
            participants: HashMap::new(),
        }
    }

    fn change(&self, account_id: &str, meeting_id: &str, state: InstanceState) -> InstanceChange {
        InstanceChange {
            account_id: account_id.to_string(),
            series: Series::Meeting {
                meeting_id: meeting_id.to_string(),
            },
            instance_id: self.id.clone(),
            meeting_type: self.meeting_type.clone(),
            first_seq: self.first_seq,
            state,
            end_ts: self.end,
            ended_explicitly: self.ended_explicitly,
        }
    }

    /// Adds a sample unless its key was seen; false for a duplicate.
    fn add(&mut self, s: &ParticipantQos, at: Arrival) -> bool {
        let p = super::entry_mut(&mut self.participants, &s.participant_id);
        if !p.seen.insert(s.timestamp) {
            return false;
        }
        self.last_received_ms = self.last_received_ms.max(at.received_ms);
        self.summary.add(s);
        let w = window_of(s.timestamp, at.interval_s);
        if !p.done.contains(&w) {
            p.open.get_or_insert_with(w, Box::default).add(s);
        }
        true
    }
}
