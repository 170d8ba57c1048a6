//! The aggregator: which window and meeting instance each sample belongs to, duplicate
//! detection, and which windows and summaries are due. It owns the open state of every
//! account; the server's aggregation thread is its only user, so nothing here locks.
//!
//! Routing follows SPEC 5.2–5.4. A meeting's instances are kept in order; instance `k` covers
//! timestamps in `(end[k-1], end[k]]`, the last one open-ended until it ends (a
//! `meeting_ended` sample or the arrival timeout). Samples at or before the end of an instance
//! whose summary is committed count nowhere. Calls work the same way with generations ended
//! by `call_ended`.
//!
//! Nothing here is persisted by itself: the caller stores every accepted sample with the route
//! the aggregator chose, and rebuilds the aggregator after a restart by replaying those rows
//! (`replay`), so both paths run the same code.

use std::collections::{HashMap, HashSet};

use qss_domain::event::{
    EventType, MeetingSummaryObject, ParticipantQosObject, PhoneCallQosObject,
};
use qss_domain::sample::{CallQos, Direction, ParticipantQos};
use qss_domain::{Sample, Settings};

use crate::{
    CallWindowAcc, CallWindowCtx, MeetingSummaryAcc, ParticipantWindowAcc, SummaryCtx, WindowCtx,
};

/// Separator inside routes and dedup keys: ids never contain control characters (SPEC 4).
const SEP: char = '\u{1f}';

type Millis = i64;
/// A window: the interval in force at acceptance (seconds) and its start (epoch ms).
type WindowKey = (u32, Millis);

/// What became of one ingested sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Already stored: drop it and count it in `duplicates`.
    Duplicate,
    /// Store it with this route (replayed to the same place after a restart).
    Store { route: String },
}

/// A change to a meeting instance that must be committed with the samples that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceChange {
    pub account_id: String,
    pub meeting_id: String,
    pub instance_id: String,
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

#[derive(Debug, Default)]
pub struct Aggregator {
    accounts: HashMap<String, AccountState>,
}

#[derive(Debug, Default)]
struct AccountState {
    meetings: HashMap<String, MeetingState>,
    calls: HashMap<(String, Direction), CallState>,
}

#[derive(Debug, Default)]
struct MeetingState {
    /// Instances whose summary is not committed, oldest first; only the last may be open.
    instances: Vec<Instance>,
    /// End of the latest instance whose summary is committed: samples at or before it count
    /// nowhere.
    closed_until: Option<Millis>,
    /// Whether that latest closed instance ended with `meeting_ended`.
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

#[derive(Debug, Default)]
struct ParticipantState {
    seen: HashSet<Millis>,
    open: HashMap<WindowKey, ParticipantWindowAcc>,
    /// Windows already emitted (or suppressed): later samples count only in the summary.
    done: HashSet<WindowKey>,
}

#[derive(Debug, Default)]
struct CallState {
    /// Generations not yet finished, oldest first; only the last may be unended.
    generations: Vec<CallGeneration>,
    next_generation: u32,
    closed_until: Option<Millis>,
}

#[derive(Debug)]
struct CallGeneration {
    number: u32,
    end: Option<Millis>,
    seen: HashSet<Millis>,
    open: HashMap<WindowKey, (CallWindowAcc, i64 /* lowest seq */)>,
    done: HashSet<WindowKey>,
}

impl CallGeneration {
    fn new(number: u32) -> Self {
        CallGeneration {
            number,
            end: None,
            seen: HashSet::new(),
            open: HashMap::new(),
            done: HashSet::new(),
        }
    }
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

pub fn call_dedup_key(call_id: &str, dir: Direction, generation: u32, w: WindowKey) -> String {
    format!(
        "c{SEP}{call_id}{SEP}{}{SEP}{generation}{SEP}{}{SEP}{}",
        dir.as_str(),
        w.0,
        w.1
    )
}

/// Context of one ingested sample.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    pub seq: i64,
    pub received_ms: Millis,
    pub interval_s: u32,
}

impl Aggregator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Places a newly accepted sample. `new_instance_id` names a meeting instance this sample
    /// opens; `changes` receives instance rows to commit with the sample.
    pub fn ingest(
        &mut self,
        account_id: &str,
        sample: &Sample,
        at: Arrival,
        new_instance_id: &mut dyn FnMut() -> String,
        changes: &mut Vec<InstanceChange>,
    ) -> Placement {
        let account = self.accounts.entry(account_id.to_string()).or_default();
        match sample {
            Sample::ParticipantQos(s) => {
                let meeting = account.meetings.entry(s.meeting_id.clone()).or_default();
                if meeting.closed_until.is_some_and(|c| s.timestamp <= c) {
                    // Its instance's summary is committed: it counts nowhere.
                    return Placement::Store {
                        route: String::new(),
                    };
                }
                let idx = match meeting
                    .instances
                    .iter()
                    .position(|i| i.end.is_none_or(|e| s.timestamp <= e))
                {
                    Some(idx) => idx,
                    None => {
                        let inst =
                            Instance::new(new_instance_id(), s.meeting_type.as_str(), at.seq);
                        changes.push(inst.change(account_id, &s.meeting_id, InstanceState::Open));
                        meeting.instances.push(inst);
                        meeting.instances.len() - 1
                    }
                };
                let inst = &mut meeting.instances[idx];
                if !inst.add_participant_sample(s, at) {
                    return Placement::Duplicate;
                }
                Placement::Store {
                    route: inst.id.clone(),
                }
            }
            Sample::MeetingEnded(e) => {
                let Some(meeting) = account.meetings.get_mut(&e.meeting_id) else {
                    return Placement::Store {
                        route: String::new(),
                    };
                };
                match meeting.instances.last_mut() {
                    Some(inst) if inst.end.is_none() => {
                        inst.end = Some(e.timestamp);
                        inst.ended_explicitly = true;
                        changes.push(inst.change(account_id, &e.meeting_id, InstanceState::Ended));
                        Placement::Store {
                            route: inst.id.clone(),
                        }
                    }
                    Some(inst) if inst.ended_explicitly => Placement::Duplicate,
                    None if meeting.closed_explicitly => Placement::Duplicate,
                    _ => Placement::Store {
                        route: String::new(),
                    },
                }
            }
            Sample::CallQos(s) => {
                let call = account
                    .calls
                    .entry((s.call_id.clone(), s.direction))
                    .or_default();
                match call.add_sample(s, at) {
                    Some(generation) => Placement::Store {
                        route: generation.to_string(),
                    },
                    None => Placement::Duplicate,
                }
            }
            Sample::CallEnded(e) => {
                let call = account
                    .calls
                    .entry((e.call_id.clone(), e.direction))
                    .or_default();
                match call.generations.last_mut() {
                    Some(g) if g.end.is_none() => {
                        g.end = Some(e.timestamp);
                        Placement::Store {
                            route: g.number.to_string(),
                        }
                    }
                    Some(_) => Placement::Duplicate,
                    None if call.closed_until.is_some() => Placement::Duplicate,
                    None => Placement::Store {
                        route: String::new(),
                    },
                }
            }
        }
    }

    /// Restores an unfinished meeting instance before replay (from the instances table).
    pub fn restore_instance(&mut self, change: &InstanceChange) {
        let account = self.accounts.entry(change.account_id.clone()).or_default();
        let meeting = account
            .meetings
            .entry(change.meeting_id.clone())
            .or_default();
        let mut inst = Instance::new(
            change.instance_id.clone(),
            &change.meeting_type,
            change.first_seq,
        );
        inst.end = change.end_ts;
        inst.ended_explicitly = change.ended_explicitly;
        meeting.instances.push(inst);
    }

    /// Replays a stored sample to the place its route names. Samples of instances that are
    /// not restored (their summary is committed) are skipped.
    pub fn replay(&mut self, account_id: &str, sample: &Sample, route: &str, at: Arrival) {
        let Some(account) = self.accounts.get_mut(account_id) else {
            if let Sample::CallQos(_) | Sample::CallEnded(_) = sample {
                self.accounts.entry(account_id.to_string()).or_default();
                return self.replay(account_id, sample, route, at);
            }
            return;
        };
        match sample {
            Sample::ParticipantQos(s) => {
                if let Some(inst) = account
                    .meetings
                    .get_mut(&s.meeting_id)
                    .and_then(|m| m.instances.iter_mut().find(|i| i.id == route))
                {
                    inst.add_participant_sample(s, at);
                }
            }
            Sample::MeetingEnded(_) => {}
            Sample::CallQos(s) => {
                let Ok(number) = route.parse::<u32>() else {
                    return;
                };
                let call = account
                    .calls
                    .entry((s.call_id.clone(), s.direction))
                    .or_default();
                call.generation_mut(number).add(s, at);
            }
            Sample::CallEnded(e) => {
                let Ok(number) = route.parse::<u32>() else {
                    return;
                };
                let call = account
                    .calls
                    .entry((e.call_id.clone(), e.direction))
                    .or_default();
                call.generation_mut(number).end = Some(e.timestamp);
            }
        }
    }

    /// Dedup keys of every window currently open, so that the caller can tell after replay
    /// which of them were already emitted (`forget_emitted`).
    pub fn open_window_keys(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (account_id, account) in &self.accounts {
            for meeting in account.meetings.values() {
                for inst in &meeting.instances {
                    for (pid, p) in &inst.participants {
                        for w in p.open.keys() {
                            out.push((
                                account_id.clone(),
                                participant_dedup_key(&inst.id, pid, *w),
                            ));
                        }
                    }
                }
            }
            for ((call_id, dir), call) in &account.calls {
                for g in &call.generations {
                    for w in g.open.keys() {
                        out.push((
                            account_id.clone(),
                            call_dedup_key(call_id, *dir, g.number, *w),
                        ));
                    }
                }
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
            for inst in &mut meeting.instances {
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
        for ((call_id, dir), call) in &mut account.calls {
            for g in &mut call.generations {
                let emitted: Vec<WindowKey> = g
                    .open
                    .keys()
                    .filter(|w| keys.contains(&call_dedup_key(call_id, *dir, g.number, **w)))
                    .copied()
                    .collect();
                for w in emitted {
                    g.open.remove(&w);
                    g.done.insert(w);
                }
            }
        }
    }

    /// Takes everything due at `now`: windows past end + grace, instances past the arrival
    /// timeout, summaries whose last window has closed. `settings` gives each account's
    /// settings (`None`: the account is gone, and its state is dropped).
    pub fn take_due(
        &mut self,
        now: Millis,
        settings: &dyn Fn(&str) -> Option<std::sync::Arc<Settings>>,
        emissions: &mut Vec<Emission>,
        changes: &mut Vec<InstanceChange>,
    ) {
        self.accounts.retain(|account_id, account| {
            let Some(settings) = settings(account_id) else {
                return false;
            };
            account.take_due(account_id, now, &settings, emissions, changes);
            !(account.meetings.is_empty() && account.calls.is_empty())
        });
    }

    /// The lowest sample sequence number still needed to rebuild this state, or `None` when
    /// nothing is open.
    pub fn replay_from(&self) -> Option<i64> {
        let mut min: Option<i64> = None;
        let mut note = |v: i64| min = Some(min.map_or(v, |m| m.min(v)));
        for account in self.accounts.values() {
            for meeting in account.meetings.values() {
                for inst in &meeting.instances {
                    note(inst.first_seq);
                }
            }
            for call in account.calls.values() {
                for g in &call.generations {
                    for (_, seq) in g.open.values() {
                        note(*seq);
                    }
                }
            }
        }
        min
    }

    /// Open participant windows, open instances and open call windows, for metrics.
    pub fn open_counts(&self) -> (usize, usize, usize) {
        let (mut windows, mut instances, mut calls) = (0, 0, 0);
        for account in self.accounts.values() {
            for meeting in account.meetings.values() {
                instances += meeting.instances.len();
                for inst in &meeting.instances {
                    windows += inst
                        .participants
                        .values()
                        .map(|p| p.open.len())
                        .sum::<usize>();
                }
            }
            for call in account.calls.values() {
                calls += call.generations.iter().map(|g| g.open.len()).sum::<usize>();
            }
        }
        (windows, instances, calls)
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
            meeting_id: meeting_id.to_string(),
            instance_id: self.id.clone(),
            meeting_type: self.meeting_type.clone(),
            first_seq: self.first_seq,
            state,
            end_ts: self.end,
            ended_explicitly: self.ended_explicitly,
        }
    }

    /// Adds a sample unless its key was seen; false for a duplicate.
    fn add_participant_sample(&mut self, s: &ParticipantQos, at: Arrival) -> bool {
        let p = self
            .participants
            .entry(s.participant_id.clone())
            .or_default();
        if !p.seen.insert(s.timestamp) {
            return false;
        }
        self.last_received_ms = self.last_received_ms.max(at.received_ms);
        self.summary.add(s);
        let w = window_of(s.timestamp, at.interval_s);
        if !p.done.contains(&w) {
            p.open.entry(w).or_default().add(s);
        }
        true
    }
}

impl CallState {
    /// Adds a sample to its generation; `None` for a duplicate or a sample of a finished call.
    fn add_sample(&mut self, s: &CallQos, at: Arrival) -> Option<u32> {
        if self.closed_until.is_some_and(|c| s.timestamp <= c) {
            return Some(u32::MAX);
        }
        let idx = match self
            .generations
            .iter()
            .position(|g| g.end.is_none_or(|e| s.timestamp <= e))
        {
            Some(idx) => idx,
            None => {
                let n = self.next_generation;
                self.next_generation += 1;
                self.generations.push(CallGeneration::new(n));
                self.generations.len() - 1
            }
        };
        let g = &mut self.generations[idx];
        g.add(s, at).then_some(g.number)
    }

    fn generation_mut(&mut self, number: u32) -> &mut CallGeneration {
        self.next_generation = self.next_generation.max(number.saturating_add(1));
        let idx = match self.generations.iter().position(|g| g.number == number) {
            Some(i) => i,
            None => {
                self.generations.push(CallGeneration::new(number));
                self.generations.sort_by_key(|g| g.number);
                self.generations
                    .iter()
                    .position(|g| g.number == number)
                    .unwrap_or(0)
            }
        };
        &mut self.generations[idx]
    }
}

impl CallGeneration {
    fn add(&mut self, s: &CallQos, at: Arrival) -> bool {
        if !self.seen.insert(s.timestamp) {
            return false;
        }
        let w = window_of(s.timestamp, at.interval_s);
        if !self.done.contains(&w) {
            let (acc, min_seq) = self
                .open
                .entry(w)
                .or_insert_with(|| (CallWindowAcc::default(), at.seq));
            acc.add(s);
            *min_seq = (*min_seq).min(at.seq);
        }
        true
    }
}

impl AccountState {
    fn take_due(
        &mut self,
        account_id: &str,
        now: Millis,
        settings: &Settings,
        emissions: &mut Vec<Emission>,
        changes: &mut Vec<InstanceChange>,
    ) {
        let grace = settings.aggregation_grace_seconds;
        let timeout_ms = i64::from(settings.meeting_end_timeout_seconds) * 1000;
        let thresholds = &settings.quality_thresholds;
        let emit_participant = settings.emits(EventType::ParticipantQos);
        let emit_summary = settings.emits(EventType::MeetingSummary);
        let emit_phone = settings.emits(EventType::PhoneCallQos);

        self.meetings.retain(|meeting_id, meeting| {
            for inst in &mut meeting.instances {
                for (pid, p) in &mut inst.participants {
                    let due: Vec<WindowKey> = p
                        .open
                        .keys()
                        .filter(|w| window_due(**w, grace) <= now)
                        .copied()
                        .collect();
                    for w in due {
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
                            emissions.push(Emission {
                                account_id: account_id.to_string(),
                                dedup_key: participant_dedup_key(&inst.id, pid, w),
                                object: EmittedObject::Participant(object),
                            });
                        }
                    }
                }
                if inst.end.is_none() && now.saturating_sub(inst.last_received_ms) >= timeout_ms {
                    inst.end = Some(
                        inst.summary
                            .last_timestamp()
                            .unwrap_or(inst.last_received_ms),
                    );
                    changes.push(inst.change(account_id, meeting_id, InstanceState::Ended));
                }
            }
            // Summaries, oldest first: once the window holding the end has closed.
            while let Some(inst) = meeting.instances.first() {
                let Some(end) = inst.end else { break };
                let interval = settings.aggregation_interval_seconds;
                if window_due(window_of(end, interval), grace) > now {
                    break;
                }
                let inst = meeting.instances.remove(0);
                if emit_summary && inst.summary.sample_count() > 0 {
                    let object = inst.summary.finish(&SummaryCtx {
                        meeting_id,
                        meeting_instance_id: &inst.id,
                        meeting_type: &inst.meeting_type,
                        end_time: end,
                        thresholds,
                    });
                    emissions.push(Emission {
                        account_id: account_id.to_string(),
                        dedup_key: summary_dedup_key(&inst.id),
                        object: EmittedObject::Summary(Box::new(object)),
                    });
                }
                changes.push(inst.change(account_id, meeting_id, InstanceState::Closed));
                meeting.closed_until = Some(end);
                meeting.closed_explicitly = inst.ended_explicitly;
            }
            // Keep a closed meeting's boundary while late samples could still arrive for it.
            !meeting.instances.is_empty()
                || meeting
                    .closed_until
                    .is_some_and(|c| now - c < 86_400_000 + 300_000)
        });

        self.calls.retain(|(call_id, dir), call| {
            for g in &mut call.generations {
                let due: Vec<WindowKey> = g
                    .open
                    .keys()
                    .filter(|w| window_due(**w, grace) <= now)
                    .copied()
                    .collect();
                for w in due {
                    let (acc, _) = g.open.remove(&w).expect("due window is open");
                    g.done.insert(w);
                    if emit_phone {
                        let object = acc.finish(&CallWindowCtx {
                            call_id,
                            direction: *dir,
                            window_start: w.1,
                            interval_seconds: w.0,
                            thresholds,
                        });
                        emissions.push(Emission {
                            account_id: account_id.to_string(),
                            dedup_key: call_dedup_key(call_id, *dir, g.number, w),
                            object: EmittedObject::Phone(object),
                        });
                    }
                }
            }
            // A generation is finished once ended and all its windows are emitted.
            while call
                .generations
                .first()
                .is_some_and(|g| g.end.is_some() && g.open.is_empty())
            {
                let g = call.generations.remove(0);
                call.closed_until = g.end;
            }
            // Idle generations without an end keep their dedup set for as long as samples
            // for them are accepted (the maximum sample age).
            let idle = call.generations.iter().all(|g| {
                g.open.is_empty()
                    && g.seen
                        .iter()
                        .max()
                        .is_none_or(|ts| now - ts > 86_400_000 + 300_000)
            });
            !(idle
                && call
                    .closed_until
                    .is_none_or(|c| now - c > 86_400_000 + 300_000))
        });
    }
}
