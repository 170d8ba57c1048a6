//! Aggregation on PostgreSQL, where several nodes share one database (SPEC 10;
//! docs/postgres-design.md).
//!
//! - Ingest: any node appends a request's samples to the shared log in one durable
//!   transaction (group commit across concurrent requests), each with its partition and
//!   idempotency key, and answers 202 after the commit. A resend is a duplicate whichever node
//!   takes it: the key is unique in the database.
//! - Aggregation: the log is split into [`PARTITIONS`] partitions by meeting or call. Each is
//!   leased to one node at a time; its holder reads the partition's new samples, places them,
//!   and emits what is due. Every commit of the holder is fenced by its lease token, so a node
//!   that lost a lease (paused, cut off) cannot write for that partition any more. A node that
//!   stops renewing (killed) loses its partitions after the lease; the others take them and
//!   rebuild their state from the database (unfinished instances, then the log from the
//!   partition's watermark), and the events' dedup keys stop a window being emitted twice.
//! - Wake-ups: appends `NOTIFY qss_samples` and event commits `NOTIFY qss_deliveries`; each
//!   node `LISTEN`s on one dedicated connection, so new work is taken without polling delay.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use qss_api::ingest::{IngestFailure, IngestOutcome};
use qss_api::metrics::EventLabels;
use qss_api::{Accounts, Clock, IngestJob, Metrics};
use qss_domain::{EventType, Sample};
use qss_engine::aggregator::{Aggregator, Arrival, CLOSED_MEMORY_MS, InstanceChange};
use qss_store::postgres::{
    ACCOUNTS_CHANNEL, DELIVERIES_CHANNEL, SAMPLES_CHANNEL, WEBHOOKS_CHANNEL,
};
use qss_store::{
    InstanceRow, Lease, NewEvent, NewSample, PARTITIONS, PartSample, PgStore, Store, StoreError,
    WriteBatch, partition_of,
};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::pipeline::{forget_emitted, instance_change, instance_row, new_event};

/// Most samples one append takes (several requests' worth: group commit).
const GROUP_MAX_SAMPLES: usize = 20_000;
/// Ingest writers per node (see `ingest_writer`).
pub const INGEST_WRITERS: usize = 2;
/// How often due windows are looked for (as on SQLite).
const TICK: Duration = Duration::from_millis(100);
/// Samples read from the log per query.
const READ_CHUNK: usize = 10_000;
/// Events per emission commit.
const EMIT_CHUNK: usize = 1000;

/// The partition and the SPEC 4 idempotency key of a sample.
pub fn sample_key(account_id: &str, s: &Sample) -> (i32, String) {
    const SEP: char = '\u{1f}';
    match s {
        Sample::ParticipantQos(p) => (
            partition_of(account_id, &p.meeting_id),
            format!(
                "p{SEP}{}{SEP}{}{SEP}{}",
                p.meeting_id, p.participant_id, p.timestamp
            ),
        ),
        Sample::CallQos(c) => (
            partition_of(account_id, &c.call_id),
            format!(
                "c{SEP}{}{SEP}{}{SEP}{}",
                c.call_id,
                c.direction.as_str(),
                c.timestamp
            ),
        ),
        // An end repeated with the same timestamp is a resend; one with another timestamp is
        // stored and its partition's owner decides (a repeat of the current instance's end
        // changes nothing).
        Sample::MeetingEnded(e) => (
            partition_of(account_id, &e.meeting_id),
            format!("me{SEP}{}{SEP}{}", e.meeting_id, e.timestamp),
        ),
        Sample::CallEnded(e) => (
            partition_of(account_id, &e.call_id),
            format!(
                "ce{SEP}{}{SEP}{}{SEP}{}",
                e.call_id,
                e.direction.as_str(),
                e.timestamp
            ),
        ),
    }
}

/// Appends queued ingest requests to the log, a group of concurrent requests per commit,
/// and answers each after the commit. Several writers share `rx`: while one holds the log's
/// lock, the next has its group ready and its transaction open. Runs until `rx` closes or
/// `stop` fires (then commits what is queued).
pub async fn ingest_writer(
    pg: PgStore,
    accounts: Arc<Accounts>,
    metrics: Arc<Metrics>,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<IngestJob>>>,
    stop: CancellationToken,
) {
    loop {
        let mut jobs = Vec::new();
        let mut last = false;
        {
            let mut rx = rx.lock().await;
            tokio::select! {
                job = rx.recv() => match job {
                    Some(j) => jobs.push(j),
                    None => return,
                },
                _ = stop.cancelled() => last = true,
            }
            let mut samples: usize = jobs.iter().map(|j| j.samples.len()).sum();
            while samples < GROUP_MAX_SAMPLES || last {
                match rx.try_recv() {
                    Ok(j) => {
                        samples += j.samples.len();
                        jobs.push(j);
                    }
                    Err(_) => break,
                }
            }
        }
        if !jobs.is_empty() {
            append_group(&pg, &accounts, &metrics, jobs).await;
        }
        if last {
            return;
        }
    }
}

async fn append_group(pg: &PgStore, accounts: &Accounts, metrics: &Metrics, jobs: Vec<IngestJob>) {
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut spans = Vec::with_capacity(jobs.len());
    for job in jobs {
        let Some(settings) = accounts.settings(&job.account_id) else {
            let _ = job.reply.send(Err(IngestFailure::Unavailable));
            continue;
        };
        let start = rows.len();
        for (sample, body) in job.samples.iter().zip(job.bodies) {
            let (part, skey) = sample_key(&job.account_id, sample);
            rows.push(NewSample {
                account_id: job.account_id.clone(),
                part,
                skey,
                received_ms: job.received_ms,
                ts: sample.timestamp(),
                interval_s: settings.aggregation_interval_seconds,
                body,
            });
        }
        spans.push((job.reply, start..rows.len()));
    }
    let requests = spans.len();
    match pg.append_samples(&rows).await {
        Ok(fresh) => {
            let stored = fresh.iter().filter(|f| **f).count();
            for (reply, span) in spans {
                let duplicates = fresh[span.clone()].iter().filter(|f| !**f).count();
                let _ = reply.send(Ok(IngestOutcome {
                    accepted: span.len(),
                    duplicates,
                }));
            }
            metrics.samples_ingested.inc_by(stored as u64);
            metrics
                .samples_duplicate
                .inc_by((rows.len() - stored) as u64);
        }
        Err(e) => {
            if e.is_unavailable() {
                tracing::warn!(error = %e, "database unavailable; ingest answered 503");
            } else {
                tracing::error!(error = %e, "appending samples failed; ingest answered 503");
            }
            for (reply, _) in spans {
                let _ = reply.send(Err(IngestFailure::Unavailable));
            }
        }
    }
    metrics
        .group_commit_seconds
        .observe(started.elapsed().as_secs_f64());
    metrics.group_commit_requests.observe(requests as f64);
}

/// What a node learns from the others (and from `qss admin`): new work, changes, and how
/// many nodes are alive.
#[derive(Clone)]
pub struct Signals {
    /// New samples in the log: the partition worker reads.
    pub samples: Arc<Notify>,
    /// New deliveries: the dispatcher claims.
    pub deliveries: Arc<Notify>,
    /// An account changed: the accounts cache reloads.
    pub accounts: Arc<Notify>,
    /// A subscription changed: cached copies are stale.
    pub webhooks_version: Arc<std::sync::atomic::AtomicU64>,
    /// Nodes alive, from the heartbeats: the dispatcher takes its share of each endpoint's cap.
    pub live_nodes: Arc<std::sync::atomic::AtomicUsize>,
}

impl Signals {
    fn wake(&self, channel: &str) {
        match channel {
            SAMPLES_CHANNEL => self.samples.notify_one(),
            DELIVERIES_CHANNEL => self.deliveries.notify_one(),
            ACCOUNTS_CHANNEL => self.accounts.notify_one(),
            WEBHOOKS_CHANNEL => {
                self.webhooks_version
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            _ => {}
        }
    }
}

/// Listens for the cluster's wake-ups on a dedicated connection, reconnecting after a failure
/// (and then waking everything, since notifications sent meanwhile are lost).
pub async fn listen(url: String, wakes: Signals, stop: CancellationToken) {
    let channels = [
        SAMPLES_CHANNEL,
        DELIVERIES_CHANNEL,
        ACCOUNTS_CHANNEL,
        WEBHOOKS_CHANNEL,
    ];
    loop {
        match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
            Ok((client, mut connection)) => {
                let (tx, mut rx) = mpsc::unbounded_channel::<String>();
                let driver = tokio::spawn(async move {
                    while let Some(m) = std::future::poll_fn(|cx| connection.poll_message(cx)).await
                    {
                        match m {
                            Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                                if tx.send(n.channel().to_string()).is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(_) => return,
                        }
                    }
                });
                let listen: String = channels.iter().map(|c| format!("LISTEN {c};")).collect();
                if client.batch_execute(&listen).await.is_ok() {
                    for c in channels {
                        wakes.wake(c);
                    }
                    loop {
                        tokio::select! {
                            channel = rx.recv() => match channel {
                                Some(c) => wakes.wake(&c),
                                None => break,
                            },
                            _ = stop.cancelled() => {
                                driver.abort();
                                return;
                            }
                        }
                    }
                }
                driver.abort();
                tracing::warn!("lost the notification connection; reconnecting");
            }
            Err(e) => tracing::warn!(error = %e, "cannot open the notification connection"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// A partition this node holds: its lease and its aggregation state.
struct Held {
    token: i64,
    agg: Aggregator,
    /// The watermark last committed.
    committed_from: i64,
}

/// The aggregation of the partitions this node holds.
pub struct PartitionWorker {
    pg: PgStore,
    node: String,
    lease_ms: i64,
    accounts: Arc<Accounts>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    delivery_wake: Arc<Notify>,
    /// How many nodes are alive, for the dispatcher's share of each endpoint's cap.
    live_nodes: Arc<std::sync::atomic::AtomicUsize>,
    held: BTreeMap<i32, Held>,
    /// Leases held whose state could not be rebuilt yet (the database failed meanwhile):
    /// renewed, and rebuilt at the next attempt.
    unbuilt: Vec<Lease>,
    /// Every sample of a held partition with `seq <= cursor` has been placed.
    cursor: i64,
}

impl PartitionWorker {
    pub fn new(
        pg: PgStore,
        lease_ms: i64,
        accounts: Arc<Accounts>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        delivery_wake: Arc<Notify>,
        live_nodes: Arc<std::sync::atomic::AtomicUsize>,
    ) -> Self {
        let node = format!("node_{}", ulid::Ulid::new().to_string().to_lowercase());
        PartitionWorker {
            pg,
            node,
            lease_ms,
            accounts,
            clock,
            metrics,
            delivery_wake,
            live_nodes,
            held: BTreeMap::new(),
            unbuilt: Vec::new(),
            cursor: 0,
        }
    }

    /// Runs until `stop` fires, then gives its partitions up. Blocking: run it on its own
    /// thread (placing samples is CPU work that must not hold up the API's runtime).
    pub fn run(mut self, wake: Arc<Notify>, stop: CancellationToken) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("aggregation runtime");
        rt.block_on(async move {
            tracing::info!(node = %self.node, "aggregation node started");
            let lease_every = Duration::from_millis((self.lease_ms / 4).max(200) as u64);
            let mut next_lease = Instant::now();
            let mut next_tick = Instant::now();
            let mut healthy = true;
            loop {
                let now = Instant::now();
                if now >= next_lease {
                    next_lease = now + lease_every;
                    if let Err(e) = self.lease_pass().await {
                        self.failed("renewing leases", &e);
                        healthy = false;
                    }
                }
                if !healthy {
                    healthy = self.rebuild_all().await;
                }
                if healthy {
                    // The time is read before the log: a sample acknowledged before the clock
                    // reached `now` is committed, so this read finds it, and the tick at `now`
                    // counts it in its window.
                    let now = self.clock.now_ms();
                    if let Err(e) = self.read_new().await {
                        self.failed("reading samples", &e);
                        healthy = false;
                    }
                    if healthy && Instant::now() >= next_tick {
                        next_tick = Instant::now() + TICK;
                        if let Err(e) = self.tick(now).await {
                            self.failed("emitting", &e);
                            healthy = false;
                        }
                    }
                }
                let wait = if healthy {
                    next_tick.min(next_lease)
                } else {
                    Instant::now() + Duration::from_secs(1)
                };
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep_until(wait.into()) => {}
                    _ = stop.cancelled() => break,
                }
            }
            if let Err(e) = self.pg.release_partitions(&self.leases()).await {
                tracing::warn!(error = %e, "could not give the partitions up; they return after the lease");
            }
            let _ = self.pg.leave(&self.node).await;
            tracing::info!("aggregation thread stopped");
        });
    }

    /// Every lease held, built or not.
    fn leases(&self) -> Vec<(i32, i64)> {
        self.held
            .iter()
            .map(|(p, h)| (*p, h.token))
            .chain(self.unbuilt.iter().map(|l| (l.part, l.token)))
            .collect()
    }

    fn failed(&self, what: &str, e: &StoreError) {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "database unavailable while {what}; retrying");
        } else if matches!(e, StoreError::LeaseLost) {
            tracing::warn!("a partition's lease was lost while {what}; rebuilding the others");
        } else {
            tracing::error!(error = %e, "{what} failed; rebuilding the partitions' state");
        }
    }

    /// Heartbeat, renewal, and this node's share: gives up partitions beyond it, claims free
    /// ones below it (and rebuilds their state).
    async fn lease_pass(&mut self) -> Result<(), StoreError> {
        let live = self.pg.heartbeat(&self.node, self.lease_ms).await?.max(1);
        self.live_nodes
            .store(live as usize, std::sync::atomic::Ordering::Relaxed);
        self.metrics.live_nodes.set(live);
        self.drop_lost().await?;
        let share = (PARTITIONS as usize).div_ceil(live as usize);
        let holding = self.held.len() + self.unbuilt.len();
        if holding > share && !self.held.is_empty() {
            let excess: Vec<(i32, i64)> = self
                .held
                .iter()
                .rev()
                .take((holding - share).min(self.held.len()))
                .map(|(p, h)| (*p, h.token))
                .collect();
            for (p, _) in &excess {
                self.held.remove(p);
            }
            self.pg.release_partitions(&excess).await?;
            tracing::info!(
                released = excess.len(),
                live,
                "gave partitions up to balance nodes"
            );
        } else if holding < share && self.unbuilt.is_empty() {
            if self.held.is_empty() {
                self.cursor = self.pg.last_sample_seq().await?;
            }
            let claimed = self
                .pg
                .claim_partitions(&self.node, share - holding, self.lease_ms)
                .await?;
            if !claimed.is_empty() {
                let started = Instant::now();
                let n = claimed.len();
                if let Err(e) = self.rebuild(&claimed).await {
                    // Kept (and renewed) until a rebuild succeeds.
                    self.unbuilt.extend(claimed);
                    return Err(e);
                }
                tracing::info!(
                    claimed = n,
                    held = self.held.len(),
                    live,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "took partitions"
                );
            }
        }
        self.metrics
            .partitions_held
            .set((self.held.len() + self.unbuilt.len()) as i64);
        Ok(())
    }

    /// After a failure: rebuilds every partition still held from the database (their state
    /// may have run ahead of what is stored). True when done.
    async fn rebuild_all(&mut self) -> bool {
        let result = async {
            self.drop_lost().await?;
            let mut leases: Vec<Lease> = std::mem::take(&mut self.held)
                .into_iter()
                .map(|(part, h)| Lease {
                    part,
                    token: h.token,
                    replay_from: h.committed_from,
                })
                .collect();
            leases.append(&mut self.unbuilt);
            self.cursor = self.pg.last_sample_seq().await?;
            let result = self.rebuild(&leases).await;
            if result.is_err() {
                // Nothing is held in memory until the next attempt; keep the leases.
                self.held.clear();
                self.unbuilt = leases;
            }
            result
        }
        .await;
        match result {
            Ok(()) => true,
            Err(e) => {
                self.failed("rebuilding", &e);
                false
            }
        }
    }

    /// Builds the state of newly held partitions from the database, up to `cursor`: their
    /// unfinished instances, the ends of recently finished ones, the log from each
    /// partition's watermark; then forgets the windows whose events are committed.
    async fn rebuild(&mut self, leases: &[Lease]) -> Result<(), StoreError> {
        let parts: Vec<i32> = leases.iter().map(|l| l.part).collect();
        let mut aggs: HashMap<i32, Aggregator> =
            parts.iter().map(|p| (*p, Aggregator::new())).collect();
        for row in self.pg.part_unfinished_instances(&parts).await? {
            let part = partition_of(&row.account_id, &row.series_id);
            if let Some(agg) = aggs.get_mut(&part) {
                agg.restore_instance(&instance_change(row)?);
            }
        }
        let since = self.clock.now_ms() - CLOSED_MEMORY_MS;
        for row in self.pg.part_closed_instances_since(&parts, since).await? {
            let part = partition_of(&row.account_id, &row.series_id);
            let c = instance_change(row)?;
            if let (Some(agg), Some(end)) = (aggs.get_mut(&part), c.end_ts) {
                agg.restore_closed(&c.account_id, &c.series, end, c.ended_explicitly);
            }
        }
        let mut changes: Vec<(i32, InstanceChange)> = Vec::new();
        for l in leases {
            let agg = aggs.get_mut(&l.part).expect("one per lease");
            let mut after = l.replay_from - 1;
            loop {
                let rows = self
                    .pg
                    .part_samples(&[l.part], after, self.cursor, READ_CHUNK)
                    .await?;
                let Some(last) = rows.last() else { break };
                after = last.seq;
                for s in &rows {
                    place(agg, s, &mut changes)?;
                }
            }
        }
        let store = Store::Postgres(self.pg.clone());
        for agg in aggs.values_mut() {
            forget_emitted(&store, agg).await?;
        }
        for l in leases {
            self.held.insert(
                l.part,
                Held {
                    token: l.token,
                    agg: aggs.remove(&l.part).expect("one per lease"),
                    committed_from: l.replay_from,
                },
            );
        }
        // Instances that replay opened anew (their first commit was lost with the old owner).
        self.commit_changes(changes).await
    }

    /// Places the held partitions' samples committed since the last read.
    async fn read_new(&mut self) -> Result<(), StoreError> {
        if self.held.is_empty() {
            return Ok(());
        }
        let parts: Vec<i32> = self.held.keys().copied().collect();
        loop {
            let rows = self
                .pg
                .part_samples(&parts, self.cursor, i64::MAX, READ_CHUNK)
                .await?;
            let Some(last) = rows.last() else {
                return Ok(());
            };
            let last_seq = last.seq;
            let mut changes = Vec::new();
            for s in &rows {
                if let Some(h) = self.held.get_mut(&s.part) {
                    place(&mut h.agg, s, &mut changes)?;
                }
            }
            self.cursor = last_seq;
            self.commit_changes(changes).await?;
            if rows.len() < READ_CHUNK {
                return Ok(());
            }
        }
    }

    /// Commits instance changes of held partitions, fenced by their leases. A partition whose
    /// lease was lost meanwhile is dropped (with its changes: its new holder replays them).
    async fn commit_changes(
        &mut self,
        changes: Vec<(i32, InstanceChange)>,
    ) -> Result<(), StoreError> {
        let mut changes = changes;
        while !changes.is_empty() {
            let mut parts: Vec<i32> = changes.iter().map(|(p, _)| *p).collect();
            parts.sort_unstable();
            parts.dedup();
            let fence: Vec<(i32, i64, Option<i64>)> = parts
                .iter()
                .filter_map(|p| self.held.get(p).map(|h| (*p, h.token, None)))
                .collect();
            changes.retain(|(p, _)| self.held.contains_key(p));
            if changes.is_empty() {
                break;
            }
            let batch = WriteBatch {
                instances: changes
                    .iter()
                    .map(|(_, c)| instance_row(c.clone()))
                    .collect(),
                ..WriteBatch::default()
            };
            match self.pg.commit_fenced(&batch, &fence).await? {
                Some(_) => break,
                None => self.drop_lost().await?,
            }
        }
        Ok(())
    }

    /// Renews every lease held and drops the partitions whose lease another node took.
    async fn drop_lost(&mut self) -> Result<(), StoreError> {
        let leases = self.leases();
        if leases.is_empty() {
            return Ok(());
        }
        let kept: HashSet<i32> = self
            .pg
            .renew_leases(&leases, self.lease_ms)
            .await?
            .into_iter()
            .collect();
        let lost = |p: &i32| {
            let lost = !kept.contains(p);
            if lost {
                tracing::warn!(
                    part = *p,
                    "lease lost; another node holds the partition now"
                );
            }
            lost
        };
        self.held.retain(|p, _| !lost(p));
        self.unbuilt.retain(|l| !lost(&l.part));
        Ok(())
    }

    /// Emits what is due at the clock's `now` in the held partitions, fenced by their leases.
    async fn tick(&mut self, now: i64) -> Result<(), StoreError> {
        let accounts = self.accounts.clone();
        let settings = |id: &str| accounts.settings(id);
        let mut events: Vec<(i32, NewEvent)> = Vec::new();
        let mut instances: Vec<InstanceRow> = Vec::new();
        let mut fence: Vec<(i32, i64, Option<i64>)> = Vec::new();
        let mut counts: HashMap<EventType, u64> = HashMap::new();
        let (mut windows, mut open_instances) = (0, 0);
        for (part, h) in &mut self.held {
            let mut emissions = Vec::new();
            let mut changes = Vec::new();
            h.agg.take_due(now, &settings, &mut emissions, &mut changes);
            let mark = h.agg.replay_from().unwrap_or(self.cursor + 1);
            let (w, i, _) = h.agg.open_counts();
            windows += w;
            open_instances += i;
            if emissions.is_empty() && changes.is_empty() && mark == h.committed_from {
                continue;
            }
            fence.push((*part, h.token, Some(mark)));
            for e in emissions {
                *counts.entry(e.object.event_type()).or_default() += 1;
                events.push((*part, new_event(e, now)));
            }
            instances.extend(changes.into_iter().map(instance_row));
        }
        if fence.is_empty() {
            return Ok(());
        }
        // In chunks, each waking the dispatchers, as on SQLite; the instance changes and the
        // watermarks go with the last chunk, so a failure in between re-emits nothing twice
        // (dedup keys) and loses nothing (the watermark has not moved).
        let mut events = events.into_iter().peekable();
        loop {
            let chunk: Vec<(i32, NewEvent)> = events.by_ref().take(EMIT_CHUNK).collect();
            let last = events.peek().is_none();
            let batch = WriteBatch {
                samples: Vec::new(),
                instances: if last {
                    std::mem::take(&mut instances)
                } else {
                    Vec::new()
                },
                events: chunk.into_iter().map(|(_, e)| e).collect(),
                replay_from: None,
            };
            let chunk_fence: Vec<(i32, i64, Option<i64>)> = fence
                .iter()
                .map(|&(p, t, m)| (p, t, if last { m } else { None }))
                .collect();
            match self.pg.commit_fenced(&batch, &chunk_fence).await? {
                Some(inserted) => {
                    if inserted > 0 {
                        self.delivery_wake.notify_one();
                    }
                }
                // Another node holds one of these partitions now, and the state of the others
                // ran ahead of what is stored: the caller rebuilds them.
                None => return Err(StoreError::LeaseLost),
            }
            if last {
                break;
            }
        }
        for (p, _, m) in &fence {
            if let (Some(h), Some(m)) = (self.held.get_mut(p), m) {
                h.committed_from = *m;
            }
        }
        for (t, n) in counts {
            self.metrics
                .events_emitted
                .get_or_create(&EventLabels {
                    event: t.as_str().to_string(),
                })
                .inc_by(n);
        }
        self.metrics.open_windows.set(windows as i64);
        self.metrics
            .open_meeting_instances
            .set(open_instances as i64);
        self.metrics
            .window_lag_seconds
            .set((self.clock.now_ms() - now) as f64 / 1000.0);
        Ok(())
    }
}

/// Places one stored sample in its partition's state.
fn place(
    agg: &mut Aggregator,
    s: &PartSample,
    changes: &mut Vec<(i32, InstanceChange)>,
) -> Result<(), StoreError> {
    let sample: Sample = serde_json::from_str(&s.body)
        .map_err(|e| StoreError::Corrupt(format!("sample {}: {e}", s.seq)))?;
    let at = Arrival {
        seq: s.seq,
        received_ms: s.received_ms,
        interval_s: s.interval_s,
    };
    let mut new_id = || format!("mi_{}", ulid::Ulid::new().to_string().to_lowercase());
    let mut placed = Vec::new();
    // Duplicates were refused at append by their key; an end that repeats the current
    // instance's end changes nothing here either.
    let _ = agg.ingest(&s.account_id, &sample, at, &mut new_id, &mut placed);
    changes.extend(placed.into_iter().map(|c| (s.part, c)));
    Ok(())
}
