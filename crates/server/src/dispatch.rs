//! The delivery workers (SPEC 7.4). One loop finds subscriptions with due work and claims a
//! small batch of each one's deliveries under a lease (with the events' bodies, in one
//! query); attempts start from a per-endpoint queue as long as the endpoint has fewer than
//! `max_in_flight_per_endpoint` in flight; results go to one recorder that commits them in
//! batches, each under the lease that claimed it.
//!
//! Isolation: claims are made per subscription, within its own free capacity, so a slow or
//! dead endpoint only ever holds its own slots and its own queue; the others' deliveries are
//! claimed and attempted independently. New work wakes the loop at once (a `Notify` from the
//! aggregation thread and the API); retries come due on a short poll.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use qss_api::{Clock, Metrics};
use qss_delivery::client::{DeliveryClient, attempt};
use qss_delivery::policy::{Outcome, decide};
use qss_store::{AttemptRecord, AttemptRow, ClaimedDelivery, Store, StoreError, WebhookRecord};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

const POLL: Duration = Duration::from_millis(250);
/// Deliveries claimed ahead per endpoint beyond those in flight: enough to keep it busy
/// between claims (each claim is a durable write transaction), few enough to start long
/// before their lease ends. More is claimed when fewer than half of it is left.
const PREFETCH: usize = 1024;
/// Most results recorded in one transaction.
const RECORD_BATCH: usize = 1024;

/// After a failed periodic re-validation: retry after 5, 20 and 60 minutes, then at the
/// normal period; the sixth failure in a row disables the subscription (SPEC 7.2).
const REVALIDATION_RETRIES_MS: [i64; 3] = [5 * 60_000, 20 * 60_000, 60 * 60_000];
const REVALIDATION_FAILURES_TO_DISABLE: i64 = 6;
const REVALIDATION_CHECK: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct DispatchConfig {
    pub timeout: Duration,
    pub schedule: Vec<u64>,
    pub lease_ms: i64,
    pub max_in_flight_per_endpoint: usize,
    /// `webhook.revalidate_hours`, in milliseconds.
    pub revalidate_ms: i64,
    /// Nodes sharing the database (always 1 on SQLite). Each takes an equal share of an
    /// endpoint's in-flight cap (rounded down, at least 1) and of the claims queued ahead, so
    /// the cap holds for the cluster and a backlog is spread over every node.
    pub live_nodes: Arc<std::sync::atomic::AtomicUsize>,
}

impl DispatchConfig {
    /// This node's in-flight cap per endpoint and claim prefetch, now.
    fn share(&self) -> (usize, usize) {
        let nodes = self.live_nodes.load(Ordering::Relaxed).max(1);
        (
            (self.max_in_flight_per_endpoint / nodes).max(1),
            PREFETCH / nodes,
        )
    }
}

/// One endpoint's (URL's) claimed deliveries and attempts in flight. Several subscriptions
/// on the same URL share it, and with it the in-flight cap (SPEC 7.4: "each endpoint").
#[derive(Default)]
struct Endpoint {
    /// Claimed, not started yet.
    queued: VecDeque<Queued>,
    in_flight: usize,
}

/// A claimed delivery waiting for a slot, with its subscription as read at the claim.
struct Queued {
    claim: ClaimedDelivery,
    webhook: Arc<WebhookRecord>,
    /// When the subscription was read (and the delivery claimed), and `webhooks_version` then.
    read_at: i64,
    version: u64,
}

/// A cached subscription record is trusted for this long when no change was signalled
/// (changes by other processes, e.g. `qss admin` deleting an account, show within it).
const WEBHOOK_CACHE_MS: i64 = 1000;

pub struct Dispatcher {
    store: Store,
    client: DeliveryClient,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    config: DispatchConfig,
    wake: Arc<Notify>,
    /// Bumped by the API on every subscription change.
    webhooks_version: Arc<AtomicU64>,
    /// Per endpoint URL. The loop claims into it; attempt tasks take from it and free slots.
    endpoints: Mutex<HashMap<String, Endpoint>>,
    /// Every attempt started (the recorder and shutdown wait on them).
    tasks: Mutex<JoinSet<()>>,
    results: mpsc::UnboundedSender<AttemptRecord>,
    results_rx: Mutex<Option<mpsc::UnboundedReceiver<AttemptRecord>>>,
}

impl Dispatcher {
    pub fn new(
        store: Store,
        client: DeliveryClient,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        config: DispatchConfig,
        wake: Arc<Notify>,
        webhooks_version: Arc<AtomicU64>,
    ) -> Self {
        let (results, rx) = mpsc::unbounded_channel();
        Dispatcher {
            store,
            client,
            clock,
            metrics,
            config,
            wake,
            webhooks_version,
            endpoints: Mutex::new(HashMap::new()),
            tasks: Mutex::new(JoinSet::new()),
            results,
            results_rx: Mutex::new(Some(rx)),
        }
    }

    /// Claims and starts attempts until `shutdown`; then lets the attempts in flight finish,
    /// records them, and hands back what was claimed but not started.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let rx = self
            .results_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let recorder_stop = CancellationToken::new();
        let version = self.webhooks_version.clone();
        let recorder = rx.map(|rx| {
            tokio::spawn(record_loop(
                self.store.clone(),
                rx,
                recorder_stop.clone(),
                version,
            ))
        });
        let mut next_revalidation = tokio::time::Instant::now();
        let mut chores = JoinSet::new();
        let mut failures: u32 = 0;
        loop {
            while chores.try_join_next().is_some() {}
            self.reap_finished_attempts();
            if tokio::time::Instant::now() >= next_revalidation {
                next_revalidation = tokio::time::Instant::now() + REVALIDATION_CHECK;
                let me = self.clone();
                chores.spawn(async move { me.revalidate_due().await });
            }
            // While the database is unreachable, claims back off (up to 32 polls) and the
            // failure is logged once, then every 20th time, and again when it is over.
            match self.claim().await {
                Ok(()) if failures > 0 => {
                    tracing::info!(failures, "claiming deliveries again");
                    failures = 0;
                }
                Ok(()) => {}
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(20) {
                        tracing::warn!(error = %e, failures, "claiming deliveries failed");
                    }
                }
            }
            self.start_ready();
            let wait = POLL * 2u32.pow(failures.min(5));
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        // Stop starting attempts; wait for those in flight (each bounded by the timeout).
        let queued: Vec<ClaimedDelivery> = {
            let mut map = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
            map.values_mut()
                .flat_map(|e| e.queued.drain(..).map(|q| q.claim))
                .collect()
        };
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        while tasks.join_next().await.is_some() {}
        chores.abort_all();
        let _ = self.store.release_claims(&queued).await;
        // Every attempt has sent its result: the recorder drains them and stops.
        recorder_stop.cancel();
        if let Some(r) = recorder {
            let _ = r.await;
        }
    }

    fn reap_finished_attempts(&self) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        while tasks.try_join_next().is_some() {}
    }

    /// Claims work for every subscription with due deliveries and room in its queue.
    async fn claim(self: &Arc<Self>) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let due = self.store.webhooks_with_due_work(now).await?;
        for webhook in due {
            let room = {
                let map = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
                let e = map.get(&webhook.url);
                let held = e.map_or(0, |e| e.queued.len() + e.in_flight);
                let (cap, prefetch) = self.config.share();
                (prefetch + cap).saturating_sub(held)
            };
            if room == 0 {
                continue;
            }
            let claimed = self
                .store
                .claim_due(
                    &webhook.account_id,
                    &webhook.webhook_id,
                    now,
                    room,
                    self.config.lease_ms,
                )
                .await?;
            let mut map = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
            let webhook = Arc::new(webhook);
            let version = self.webhooks_version.load(Ordering::SeqCst);
            let e = map.entry(webhook.url.clone()).or_default();
            e.queued.extend(claimed.into_iter().map(|claim| Queued {
                claim,
                webhook: webhook.clone(),
                read_at: now,
                version,
            }));
        }
        Ok(())
    }

    /// Starts attempts from every queue while its endpoint has free slots.
    fn start_ready(self: &Arc<Self>) {
        let ids: Vec<String> = self
            .endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        for id in ids {
            self.start_next(&id);
        }
    }

    /// Starts queued attempts of one endpoint up to its cap.
    fn start_next(self: &Arc<Self>, url: &str) {
        let now = self.clock.now_ms();
        let mut starts = Vec::new();
        {
            let mut map = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
            let Some(e) = map.get_mut(url) else {
                return;
            };
            let (cap, _) = self.config.share();
            while e.in_flight < cap {
                let Some(q) = e.queued.pop_front() else {
                    break;
                };
                // Too close to the end of its lease: let it expire and be claimed afresh.
                if now - q.read_at > self.config.lease_ms / 2 {
                    continue;
                }
                e.in_flight += 1;
                starts.push(q);
            }
            if e.queued.is_empty() && e.in_flight == 0 {
                map.remove(url);
            }
        }
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        for q in starts {
            let me = self.clone();
            let url = url.to_string();
            tasks.spawn(async move {
                if let Some(record) = me.attempt(q).await {
                    let _ = me.results.send(record);
                }
                let low = {
                    let mut map = me.endpoints.lock().unwrap_or_else(|p| p.into_inner());
                    match map.get_mut(&url) {
                        Some(e) => {
                            e.in_flight -= 1;
                            e.queued.len() < PREFETCH / 2
                        }
                        None => true,
                    }
                };
                me.start_next(&url);
                if low {
                    // The queue runs low: claim more without waiting for the poll.
                    me.wake.notify_one();
                }
            });
        }
    }

    /// One attempt of a claimed delivery, and what to record; `None` when the subscription
    /// is no longer active (deleted, paused, disabled), and nothing was sent.
    async fn attempt(&self, q: Queued) -> Option<AttemptRecord> {
        let Queued {
            claim,
            webhook: cached,
            read_at,
            version,
        } = q;
        // The subscription may have changed since the claim (deleted, paused, disabled by a
        // 410, secret rotated): read it again, by primary key, before sending anything, when
        // a change was signalled or the copy is older than a second.
        let stale = self.webhooks_version.load(Ordering::SeqCst) != version
            || self.clock.now_ms() - read_at > WEBHOOK_CACHE_MS;
        let webhook = if stale {
            match self
                .store
                .get_webhook(&claim.account_id, &claim.webhook_id)
                .await
            {
                Ok(Some(w)) if w.status == "active" => Arc::new(w),
                Ok(_) => {
                    // Paused: hand the claim back so it waits for reactivation; deleted or
                    // disabled: its deliveries are cancelled already.
                    let _ = self.store.release_claims(&[claim]).await;
                    return None;
                }
                Err(_) => cached,
            }
        } else {
            cached
        };
        let webhook = &webhook;
        let started = self.clock.now_ms();
        if claim.attempt_count == 0 {
            self.metrics
                .first_attempt_latency_seconds
                .observe((started - claim.created_at).max(0) as f64 / 1000.0);
        }
        let Some(body) = claim.body.clone() else {
            // Retention removed the event before it could be delivered.
            let attempt = AttemptRow {
                at: started,
                http_status: None,
                error: None,
                duration_ms: 0,
                response_body: String::new(),
            };
            return Some(AttemptRecord {
                claim,
                attempt,
                status: "expired",
                next_attempt_at: None,
                disable_webhook: false,
            });
        };
        let previous = webhook
            .previous_secret
            .as_deref()
            .filter(|_| webhook.previous_secret_until.is_some_and(|u| started < u));
        let body = Bytes::from(body);
        let headers = qss_delivery::signing::headers(
            env!("CARGO_PKG_VERSION"),
            &claim.delivery_id,
            started / 1000,
            &body,
            &webhook.secret,
            previous,
        );
        let result = attempt(
            &self.client,
            &webhook.url,
            &headers,
            body,
            self.config.timeout,
        )
        .await;
        let now = self.clock.now_ms();
        let jitter = rand::random::<f64>() * 2.0 - 1.0;
        let mut outcome = decide(
            &result,
            claim.attempt_count as u32 + 1,
            &self.config.schedule,
            now,
            claim.created_at,
            webhook.max_age_seconds.map(|s| s as u64),
            jitter,
        );
        if !claim.auto_retry && matches!(outcome, Outcome::Retry { .. }) {
            outcome = Outcome::Failed;
        }
        let (status, next_attempt_at) = match outcome {
            Outcome::Succeeded => ("succeeded", None),
            Outcome::Retry { at_ms } => ("pending", Some(at_ms)),
            Outcome::Failed | Outcome::Disable => ("failed", None),
            Outcome::Expired => ("expired", None),
        };
        self.metrics
            .attempt_duration_seconds
            .observe(result.duration_ms as f64 / 1000.0);
        self.metrics
            .deliveries
            .get_or_create(&qss_api::metrics::OutcomeLabels {
                outcome: status.to_string(),
            })
            .inc();
        if outcome == Outcome::Disable {
            tracing::info!(webhook = %claim.webhook_id, "endpoint answered 410 Gone: subscription disabled");
        }
        let attempt = AttemptRow {
            at: started,
            http_status: result.http_status,
            error: result.error.map(|e| e.as_str().to_string()),
            duration_ms: result.duration_ms as i64,
            response_body: result.response_body,
        };
        Some(AttemptRecord {
            claim,
            attempt,
            status,
            next_attempt_at,
            disable_webhook: outcome == Outcome::Disable,
        })
    }

    /// Runs the periodic handshake of every subscription whose re-validation is due.
    pub async fn revalidate_due(&self) {
        let now = self.clock.now_ms();
        let due = match self.store.webhooks_due_for_validation(now).await {
            Ok(due) => due,
            Err(e) => return tracing::warn!(error = %e, "listing re-validations failed"),
        };
        for mut w in due {
            let accepted: Vec<&str> = std::iter::once(w.secret.as_str())
                .chain(
                    w.previous_secret
                        .as_deref()
                        .filter(|_| w.previous_secret_until.is_some_and(|u| now < u)),
                )
                .collect();
            let result = qss_delivery::handshake(
                &self.client,
                &w.url,
                &w.secret,
                &accepted,
                self.config.timeout,
                now,
                env!("CARGO_PKG_VERSION"),
            )
            .await;
            let now = self.clock.now_ms();
            match result {
                Ok(()) => {
                    w.validated_at = Some(now);
                    w.validation_failures = 0;
                    w.next_validation_at = Some(now + self.config.revalidate_ms);
                }
                Err(reason) => {
                    w.validation_failures += 1;
                    tracing::info!(webhook = %w.webhook_id, failures = w.validation_failures, %reason, "re-validation failed");
                    if w.validation_failures >= REVALIDATION_FAILURES_TO_DISABLE {
                        w.status = "disabled".to_string();
                    }
                    let retry = REVALIDATION_RETRIES_MS.get(w.validation_failures as usize - 1);
                    w.next_validation_at =
                        Some(now + retry.copied().unwrap_or(self.config.revalidate_ms));
                }
            }
            if let Err(e) = self.store.update_webhook(&w).await {
                tracing::warn!(error = %e, "recording a re-validation failed");
            }
        }
    }
}

/// Commits attempt results in batches until `stop`, then drains what is left.
async fn record_loop(
    store: Store,
    mut rx: mpsc::UnboundedReceiver<AttemptRecord>,
    stop: CancellationToken,
    webhooks_version: Arc<AtomicU64>,
) {
    let mut batch = Vec::with_capacity(RECORD_BATCH);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, RECORD_BATCH) => if n == 0 { return },
            _ = stop.cancelled() => {
                while let Ok(r) = rx.try_recv() {
                    batch.push(r);
                }
                if batch.is_empty() {
                    return;
                }
            }
        }
        let records = std::mem::take(&mut batch);
        if records.iter().any(|r| r.disable_webhook) {
            // Queued deliveries of a subscription disabled by a 410 must see it.
            webhooks_version.fetch_add(1, Ordering::SeqCst);
        }
        match store.record_attempts(&records).await {
            Ok(n) if n < records.len() => {
                tracing::warn!(
                    lost = records.len() - n,
                    "leases lost before attempts were recorded"
                );
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "recording delivery attempts failed; they will be retried after the lease")
            }
        }
    }
}
