//! The aggregator: where each sample belongs (meeting instance or call generation, window),
//! duplicate detection, and what is due. It owns the open state of every account; the
//! server's aggregation thread is its only user, so nothing here locks.
//!
//! Routing follows SPEC 5.2–5.4. A meeting's instances are kept in order; instance `k` covers
//! timestamps in `(end[k-1], end[k]]`, the last one open-ended until it ends (a
//! `meeting_ended` sample or the arrival timeout). Samples at or before the end of an instance
//! whose summary is committed count nowhere. A call direction works the same way: its
//! generations are ended by `call_ended`, and a later sample starts a new call.
//!
//! Nothing here is persisted by itself. The caller stores every accepted sample with the
//! route the aggregator chose (the instance or generation id) and every [`InstanceChange`];
//! after a restart it restores the unfinished instances, the boundaries of recently finished
//! ones, and replays the stored samples (`replay`), so both paths run the same code.

mod call;
mod meeting;
mod small;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use qss_domain::event::{
    EventType, MeetingSummaryObject, ParticipantQosObject, PhoneCallQosObject,
};
use qss_domain::sample::Direction;
use qss_domain::{Sample, Settings};

use call::CallState;
use meeting::MeetingState;

/// Separator inside dedup keys: ids never contain control characters (SPEC 4).
const SEP: char = '\u{1f}';

/// How long the boundary of a finished instance is kept: samples older than the maximum
/// sample age (plus the 5 minutes of allowed clock skew) are refused at ingest anyway.
pub const CLOSED_MEMORY_MS: Millis = 86_400_000 + 300_000;

type Millis = i64;
/// A window: the interval in force at acceptance (seconds) and its start (epoch ms).
type WindowKey = (u32, Millis);

/// What became of one ingested sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Already stored: drop it and count it in `duplicates`.
    Duplicate,
    /// Store it with this route (replayed to the same place after a restart); an empty route
    /// means the sample counts nowhere (its instance is finished).
    Store { route: String },
}

/// What an instance belongs to: a meeting, or one direction of a call.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Series {
    Meeting {
        meeting_id: String,
    },
    Call {
        call_id: String,
        direction: Direction,
    },
}

/// A change to a meeting instance or call generation, to commit with what caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceChange {
    pub account_id: String,
    pub series: Series,
    pub instance_id: String,
    /// `meeting` or `webinar` for meetings, `call` for calls.
    pub meeting_type: String,
    pub first_seq: i64,
    pub state: InstanceState,
    pub end_ts: Option<Millis>,
    pub ended_explicitly: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceState {
    Open,
    Ended,
    Closed,
}

/// An event the aggregator decided to emit.
#[derive(Debug, Clone)]
pub struct Emission {
    pub account_id: String,
    pub dedup_key: String,
    pub object: EmittedObject,
}

/// Emissions live only between `take_due` and their commit, so the size difference between
/// variants costs nothing worth a box for the common (participant) case.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum EmittedObject {
    Participant(ParticipantQosObject),
    Summary(Box<MeetingSummaryObject>),
    Phone(PhoneCallQosObject),
}

impl EmittedObject {
    pub fn event_type(&self) -> EventType {
        match self {
            EmittedObject::Participant(_) => EventType::ParticipantQos,
            EmittedObject::Summary(_) => EventType::MeetingSummary,
            EmittedObject::Phone(_) => EventType::PhoneCallQos,
        }
    }
}

/// Context of one ingested sample.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    pub seq: i64,
    pub received_ms: Millis,
    pub interval_s: u32,
}

/// Where due work goes, and the settings in force.
struct Due<'a> {
    account_id: &'a str,
    now: Millis,
    settings: &'a Settings,
    emissions: &'a mut Vec<Emission>,
    changes: &'a mut Vec<InstanceChange>,
}

#[derive(Debug, Default)]
pub struct Aggregator {
    accounts: HashMap<String, AccountState>,
}

#[derive(Debug, Default)]
struct AccountState {
    meetings: HashMap<String, MeetingState>,
    calls: HashMap<(String, Direction), CallState>,
}

/// The entry for `key`, allocating an owned key only when it is new: the hot path (a sample
/// of a known account, meeting or participant) then allocates nothing.
fn entry_mut<'m, V: Default>(map: &'m mut HashMap<String, V>, key: &str) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_string(), V::default());
    }
    map.get_mut(key).expect("just inserted")
}

fn window_of(ts: Millis, interval_s: u32) -> WindowKey {
    let len = i64::from(interval_s) * 1000;
    (interval_s, ts.div_euclid(len) * len)
}

fn window_due(key: WindowKey, grace_s: u32) -> Millis {
    key.1 + i64::from(key.0) * 1000 + i64::from(grace_s) * 1000
}

pub fn participant_dedup_key(instance: &str, participant: &str, w: WindowKey) -> String {
    format!("w{SEP}{instance}{SEP}{participant}{SEP}{}{SEP}{}", w.0, w.1)
}

pub fn summary_dedup_key(instance: &str) -> String {
    format!("s{SEP}{instance}")
}

pub fn call_dedup_key(generation: &str, w: WindowKey) -> String {
    format!("c{SEP}{generation}{SEP}{}{SEP}{}", w.0, w.1)
}

impl Aggregator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Places a newly accepted sample. `new_id` names an instance or call generation this
    /// sample opens; `changes` receives the instance rows to commit with the sample.
    pub fn ingest(
        &mut self,
        account_id: &str,
        sample: &Sample,
        at: Arrival,
        new_id: &mut dyn FnMut() -> String,
        changes: &mut Vec<InstanceChange>,
    ) -> Placement {
        let account = entry_mut(&mut self.accounts, account_id);
        match sample {
            Sample::ParticipantQos(s) => {
                let meeting = entry_mut(&mut account.meetings, &s.meeting_id);
                meeting.ingest(account_id, s, at, new_id, changes)
            }
            Sample::MeetingEnded(e) => match account.meetings.get_mut(&e.meeting_id) {
                Some(meeting) => meeting.end(account_id, e, changes),
                None => Placement::Store {
                    route: String::new(),
                },
            },
            Sample::CallQos(s) => {
                let call = account
                    .calls
                    .entry((s.call_id.clone(), s.direction))
                    .or_default();
                call.ingest(account_id, s, at, new_id, changes)
            }
            Sample::CallEnded(e) => {
                match account.calls.get_mut(&(e.call_id.clone(), e.direction)) {
                    Some(call) => call.end(account_id, e, changes),
                    None => Placement::Store {
                        route: String::new(),
                    },
                }
            }
        }
    }

    /// Restores an unfinished instance or generation before replay.
    pub fn restore_instance(&mut self, change: &InstanceChange) {
        let account = self.accounts.entry(change.account_id.clone()).or_default();
        match &change.series {
            Series::Meeting { meeting_id } => account
                .meetings
                .entry(meeting_id.clone())
                .or_default()
                .restore(change),
            Series::Call { call_id, direction } => account
                .calls
                .entry((call_id.clone(), *direction))
                .or_default()
                .restore(change),
        }
    }

    /// Restores the boundary of a finished instance: samples at or before `end_ts` count
    /// nowhere, and a repeated end sample is a duplicate.
    pub fn restore_closed(
        &mut self,
        account_id: &str,
        series: &Series,
        end_ts: Millis,
        explicit: bool,
    ) {
        let account = self.accounts.entry(account_id.to_string()).or_default();
        match series {
            Series::Meeting { meeting_id } => account
                .meetings
                .entry(meeting_id.clone())
                .or_default()
                .restore_closed(end_ts, explicit),
            Series::Call { call_id, direction } => account
                .calls
                .entry((call_id.clone(), *direction))
                .or_default()
                .restore_closed(end_ts, explicit),
        }
    }

    /// Replays a stored sample to the instance its route names. Samples of instances that
    /// are not restored (finished) are skipped.
    pub fn replay(&mut self, account_id: &str, sample: &Sample, route: &str, at: Arrival) {
        let Some(account) = self.accounts.get_mut(account_id) else {
            return;
        };
        match sample {
            Sample::ParticipantQos(s) => {
                if let Some(m) = account.meetings.get_mut(&s.meeting_id) {
                    m.replay(s, route, at);
                }
            }
            Sample::CallQos(s) => {
                if let Some(c) = account.calls.get_mut(&(s.call_id.clone(), s.direction)) {
                    c.replay(s, route, at);
                }
            }
            // Ends are restored from the instance rows, committed with them.
            Sample::MeetingEnded(_) | Sample::CallEnded(_) => {}
        }
    }

    /// Dedup keys of every open window, so that the caller can tell after replay which of
    /// them were already emitted (`forget_emitted`).
    pub fn open_window_keys(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (account_id, account) in &self.accounts {
            for meeting in account.meetings.values() {
                meeting.open_window_keys(&mut |k| out.push((account_id.clone(), k)));
            }
            for call in account.calls.values() {
                call.open_window_keys(&mut |k| out.push((account_id.clone(), k)));
            }
        }
        out
    }

    /// Marks windows (by dedup key) as emitted before the restart.
    pub fn forget_emitted(&mut self, account_id: &str, keys: &HashSet<String>) {
        let Some(account) = self.accounts.get_mut(account_id) else {
            return;
        };
        for meeting in account.meetings.values_mut() {
            meeting.forget_emitted(keys);
        }
        for call in account.calls.values_mut() {
            call.forget_emitted(keys);
        }
    }

    /// Takes everything due at `now`: windows past end + grace, instances past the arrival
    /// timeout, summaries whose last window has closed. `settings` gives each account's
    /// settings (`None`: the account is gone, and its state is dropped).
    pub fn take_due(
        &mut self,
        now: Millis,
        settings: &dyn Fn(&str) -> Option<Arc<Settings>>,
        emissions: &mut Vec<Emission>,
        changes: &mut Vec<InstanceChange>,
    ) {
        self.accounts.retain(|account_id, account| {
            let Some(settings) = settings(account_id) else {
                return false;
            };
            let mut due = Due {
                account_id,
                now,
                settings: &settings,
                emissions,
                changes,
            };
            account
                .meetings
                .retain(|meeting_id, m| m.take_due(meeting_id, &mut due));
            account
                .calls
                .retain(|(call_id, dir), c| c.take_due(call_id, *dir, &mut due));
            !(account.meetings.is_empty() && account.calls.is_empty())
        });
    }

    /// The lowest sample sequence number still needed to rebuild this state, or `None` when
    /// nothing is open.
    pub fn replay_from(&self) -> Option<i64> {
        let mut min: Option<i64> = None;
        for account in self.accounts.values() {
            let seqs = account
                .meetings
                .values()
                .filter_map(MeetingState::replay_from)
                .chain(account.calls.values().filter_map(CallState::replay_from));
            for s in seqs {
                min = Some(min.map_or(s, |m| m.min(s)));
            }
        }
        min
    }

    /// Open participant windows, unfinished meeting instances, open call windows.
    pub fn open_counts(&self) -> (usize, usize, usize) {
        let (mut windows, mut instances, mut calls) = (0, 0, 0);
        for account in self.accounts.values() {
            for meeting in account.meetings.values() {
                let (w, i) = meeting.open_counts();
                windows += w;
                instances += i;
            }
            calls += account
                .calls
                .values()
                .map(CallState::open_windows)
                .sum::<usize>();
        }
        (windows, instances, calls)
    }
}
