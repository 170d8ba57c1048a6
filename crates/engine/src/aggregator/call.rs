//! One call direction's generations: routing of `call_qos` samples, windows, and the ends
//! made by `call_ended` (a later sample with a later timestamp starts a new call).

use std::collections::HashSet;

use qss_domain::EventType;
use qss_domain::sample::{CallEnded, CallQos, Direction};

use super::small::{SmallMap, SortedSet};
use super::{
    Arrival, CLOSED_MEMORY_MS, Due, Emission, EmittedObject, InstanceChange, InstanceState, Millis,
    Placement, Series, WindowKey, call_dedup_key, window_due, window_of,
};
use crate::{CallWindowAcc, CallWindowCtx};

#[derive(Debug, Default)]
pub(super) struct CallState {
    /// Unfinished generations, oldest first; only the last may be unended.
    generations: Vec<Generation>,
    /// End of the latest finished generation: samples at or before it count nowhere.
    closed_until: Option<Millis>,
    closed_explicitly: bool,
}

#[derive(Debug)]
struct Generation {
    id: String,
    first_seq: i64,
    end: Option<Millis>,
    ended_explicitly: bool,
    /// Last arrival (server clock); `None` until known after a restart.
    last_received_ms: Option<Millis>,
    seen: SortedSet<Millis>,
    /// Open windows with the lowest sample sequence number each holds.
    open: SmallMap<WindowKey, (CallWindowAcc, i64)>,
    done: SortedSet<WindowKey>,
}

impl CallState {
    pub(super) fn ingest(
        &mut self,
        account_id: &str,
        s: &CallQos,
        at: Arrival,
        new_id: &mut dyn FnMut() -> String,
        changes: &mut Vec<InstanceChange>,
    ) -> Placement {
        if self.closed_until.is_some_and(|c| s.timestamp <= c) {
            return Placement::Store {
                route: String::new(),
            };
        }
        let idx = match self
            .generations
            .iter()
            .position(|g| g.end.is_none_or(|e| s.timestamp <= e))
        {
            Some(idx) => idx,
            None => {
                let g = Generation::new(new_id(), at.seq);
                changes.push(g.change(account_id, &s.call_id, s.direction, InstanceState::Open));
                self.generations.push(g);
                self.generations.len() - 1
            }
        };
        let g = &mut self.generations[idx];
        if g.add(s, at) {
            Placement::Store {
                route: g.id.clone(),
            }
        } else {
            Placement::Duplicate
        }
    }

    pub(super) fn end(
        &mut self,
        account_id: &str,
        e: &CallEnded,
        changes: &mut Vec<InstanceChange>,
    ) -> Placement {
        match self.generations.last_mut() {
            Some(g) if g.end.is_none() => {
                g.end = Some(e.timestamp);
                g.ended_explicitly = true;
                changes.push(g.change(account_id, &e.call_id, e.direction, InstanceState::Ended));
                Placement::Store {
                    route: g.id.clone(),
                }
            }
            Some(g) if g.ended_explicitly => Placement::Duplicate,
            None if self.closed_explicitly => Placement::Duplicate,
            _ => Placement::Store {
                route: String::new(),
            },
        }
    }

    pub(super) fn restore(&mut self, c: &InstanceChange) {
        let mut g = Generation::new(c.instance_id.clone(), c.first_seq);
        g.end = c.end_ts;
        g.ended_explicitly = c.ended_explicitly;
        self.generations.push(g);
        self.generations.sort_by_key(|g| g.first_seq);
    }

    pub(super) fn restore_closed(&mut self, end_ts: Millis, explicit: bool) {
        if self.closed_until.is_none_or(|c| end_ts >= c) {
            self.closed_until = Some(end_ts);
            self.closed_explicitly = explicit;
        }
    }

    pub(super) fn replay(&mut self, s: &CallQos, route: &str, at: Arrival) {
        if let Some(g) = self.generations.iter_mut().find(|g| g.id == route) {
            g.add(s, at);
        }
    }

    pub(super) fn open_window_keys(&self, out: &mut dyn FnMut(String)) {
        for g in &self.generations {
            for w in g.open.keys() {
                out(call_dedup_key(&g.id, *w));
            }
        }
    }

    pub(super) fn forget_emitted(&mut self, keys: &HashSet<String>) {
        for g in &mut self.generations {
            let emitted: Vec<WindowKey> = g
                .open
                .keys()
                .filter(|w| keys.contains(&call_dedup_key(&g.id, **w)))
                .copied()
                .collect();
            for w in emitted {
                g.open.remove(&w);
                g.done.insert(w);
            }
        }
    }

    /// Emits due windows and finishes generations; false when nothing is worth keeping.
    pub(super) fn take_due(
        &mut self,
        call_id: &str,
        direction: Direction,
        due: &mut Due<'_>,
    ) -> bool {
        let grace = due.settings.aggregation_grace_seconds;
        let emit = due.settings.emits(EventType::PhoneCallQos);
        for g in &mut self.generations {
            let ready: Vec<WindowKey> = g
                .open
                .keys()
                .filter(|w| window_due(**w, grace) <= due.now)
                .copied()
                .collect();
            for w in ready {
                let (acc, _) = g.open.remove(&w).expect("due window is open");
                g.done.insert(w);
                if emit {
                    let object = acc.finish(&CallWindowCtx {
                        call_id,
                        direction,
                        window_start: w.1,
                        interval_seconds: w.0,
                        thresholds: &due.settings.quality_thresholds,
                    });
                    due.emissions.push(Emission {
                        account_id: due.account_id.to_string(),
                        dedup_key: call_dedup_key(&g.id, w),
                        object: EmittedObject::Phone(object),
                    });
                }
            }
            let last = *g.last_received_ms.get_or_insert(due.now);
            // A call that never ended and has been silent for as long as samples are accepted
            // is over: finish it at its latest sample.
            if g.end.is_none() && g.open.is_empty() && due.now - last > CLOSED_MEMORY_MS {
                g.end = Some(g.seen.max().unwrap_or(last));
            }
        }
        while self
            .generations
            .first()
            .is_some_and(|g| g.end.is_some() && g.open.is_empty())
        {
            let g = self.generations.remove(0);
            due.changes
                .push(g.change(due.account_id, call_id, direction, InstanceState::Closed));
            self.closed_until = g.end;
            self.closed_explicitly = g.ended_explicitly;
        }
        !self.generations.is_empty()
            || self
                .closed_until
                .is_some_and(|c| due.now - c < CLOSED_MEMORY_MS)
    }

    /// Only open windows pin the sample log: a long call whose windows are all emitted must
    /// not keep hours of samples from retention.
    pub(super) fn replay_from(&self) -> Option<i64> {
        self.generations
            .iter()
            .flat_map(|g| g.open.values().map(|(_, seq)| *seq))
            .min()
    }

    pub(super) fn open_windows(&self) -> usize {
        self.generations.iter().map(|g| g.open.len()).sum()
    }
}

impl Generation {
    fn new(id: String, first_seq: i64) -> Self {
        Generation {
            id,
            first_seq,
            end: None,
            ended_explicitly: false,
            last_received_ms: None,
            seen: SortedSet::default(),
            open: SmallMap::default(),
            done: SortedSet::default(),
        }
    }

    fn change(
        &self,
        account_id: &str,
        call_id: &str,
        direction: Direction,
        state: InstanceState,
    ) -> InstanceChange {
        InstanceChange {
            account_id: account_id.to_string(),
            series: Series::Call {
                call_id: call_id.to_string(),
                direction,
            },
            instance_id: self.id.clone(),
            meeting_type: "call".to_string(),
            first_seq: self.first_seq,
            state,
            end_ts: self.end,
            ended_explicitly: self.ended_explicitly,
        }
    }

    fn add(&mut self, s: &CallQos, at: Arrival) -> bool {
        if !self.seen.insert(s.timestamp) {
            return false;
        }
        self.last_received_ms = Some(
            self.last_received_ms
                .map_or(at.received_ms, |l| l.max(at.received_ms)),
        );
        let w = window_of(s.timestamp, at.interval_s);
        if !self.done.contains(&w) {
            let (acc, min_seq) = self
                .open
                .get_or_insert_with(w, || (CallWindowAcc::default(), at.seq));
            acc.add(s);
            *min_seq = (*min_seq).min(at.seq);
        }
        true
    }
}
