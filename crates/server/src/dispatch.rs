//! The delivery workers (SPEC 7.4): claim due deliveries under a lease, make the attempt,
//! record the outcome under the same lease. New work wakes them at once (a `Notify` from the
//! aggregation thread and the API); retries are found by a short poll.
//!
//! Isolation: each endpoint has at most `max_in_flight_per_endpoint` attempts in flight; a
//! claim skips saturated endpoints, so a slow or dead endpoint never holds a worker slot that
//! another endpoint's delivery needs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use qss_api::{Clock, Metrics};
use qss_delivery::client::{DeliveryClient, attempt};
use qss_delivery::policy::{Outcome, decide};
use qss_store::{AttemptRow, ClaimedDelivery, SqliteStore, StoreError};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

const CLAIM_BATCH: usize = 256;
const POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub struct DispatchConfig {
    pub timeout: Duration,
    pub schedule: Vec<u64>,
    pub lease_ms: i64,
    pub max_in_flight_per_endpoint: usize,
    /// `webhook.revalidate_hours`, in milliseconds.
    pub revalidate_ms: i64,
}

/// After a failed periodic re-validation: retry after 5, 20 and 60 minutes, then at the
/// normal period; the sixth failure in a row disables the subscription (SPEC 7.2).
const REVALIDATION_RETRIES_MS: [i64; 3] = [5 * 60_000, 20 * 60_000, 60 * 60_000];
const REVALIDATION_FAILURES_TO_DISABLE: i64 = 6;
const REVALIDATION_CHECK: Duration = Duration::from_secs(30);

pub struct Dispatcher {
    pub store: Arc<SqliteStore>,
    pub client: DeliveryClient,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub config: DispatchConfig,
    pub wake: Arc<Notify>,
    /// Attempts in flight per webhook id. Owned by the dispatcher; tasks decrement on finish.
    in_flight: Mutex<HashMap<String, usize>>,
}

impl Dispatcher {
    pub fn new(
        store: Arc<SqliteStore>,
        client: DeliveryClient,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        config: DispatchConfig,
        wake: Arc<Notify>,
    ) -> Self {
        Dispatcher {
            store,
            client,
            clock,
            metrics,
            config,
            wake,
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// Claims and starts attempts until `shutdown`; then lets the attempts in flight finish.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tasks = JoinSet::new();
        let mut next_revalidation = tokio::time::Instant::now();
        loop {
            while tasks.try_join_next().is_some() {}
            if tokio::time::Instant::now() >= next_revalidation {
                next_revalidation = tokio::time::Instant::now() + REVALIDATION_CHECK;
                let me = self.clone();
                tasks.spawn(async move { me.revalidate_due().await });
            }
            let claimed = match self.claim().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming deliveries failed");
                    Vec::new()
                }
            };
            let full = claimed.len() == CLAIM_BATCH;
            for claim in claimed {
                let me = self.clone();
                tasks.spawn(async move { me.deliver(claim).await });
            }
            if full {
                continue;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        // In-flight attempts finish (each is bounded by the attempt timeout).
        while tasks.join_next().await.is_some() {}
    }

    /// Runs the periodic handshake of every subscription whose re-validation is due.
    pub async fn revalidate_due(&self) {
        let (store, now) = (self.store.clone(), self.clock.now_ms());
        let due = match tokio::task::spawn_blocking(move || store.webhooks_due_for_validation(now))
            .await
        {
            Ok(Ok(due)) => due,
            Ok(Err(e)) => return tracing::warn!(error = %e, "listing re-validations failed"),
            Err(_) => return,
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
            let store = self.store.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.update_webhook(&w)).await
            {
                tracing::warn!(error = %e, "recording a re-validation failed");
            }
        }
    }

    /// Claims due deliveries of endpoints below their cap, and counts them in flight.
    async fn claim(self: &Arc<Self>) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let cap = self.config.max_in_flight_per_endpoint;
        let saturated: Vec<String> = {
            let map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            map.iter()
                .filter(|(_, n)| **n >= cap)
                .map(|(k, _)| k.clone())
                .collect()
        };
        let (store, now, lease) = (
            self.store.clone(),
            self.clock.now_ms(),
            self.config.lease_ms,
        );
        let claimed = tokio::task::spawn_blocking(move || {
            store.claim_due(now, CLAIM_BATCH, lease, &saturated)
        })
        .await
        .map_err(|e| StoreError::Corrupt(e.to_string()))??;
        let mut keep = Vec::with_capacity(claimed.len());
        let mut over = Vec::new();
        {
            let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            for c in claimed {
                let n = map.entry(c.webhook_id.clone()).or_default();
                if *n < cap {
                    *n += 1;
                    keep.push(c);
                } else {
                    over.push(c);
                }
            }
        }
        if !over.is_empty() {
            // More than the cap came in one claim: hand the rest back at once.
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || {
                for c in &over {
                    let _ = store.release_claim(c);
                }
            });
        }
        Ok(keep)
    }

    async fn deliver(self: Arc<Self>, claim: ClaimedDelivery) {
        if let Err(e) = self.try_deliver(&claim).await {
            tracing::warn!(error = %e, delivery = %claim.delivery_id, "delivery attempt could not be recorded");
        }
        let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&claim.webhook_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&claim.webhook_id);
            }
        }
        drop(map);
        // A slot is free: deliveries of this endpoint may be waiting.
        self.wake.notify_one();
    }

    /// One attempt of one claimed delivery, and its record.
    pub async fn try_deliver(&self, claim: &ClaimedDelivery) -> Result<(), StoreError> {
        let store = self.store.clone();
        let c = claim.clone();
        let (webhook, body) = tokio::task::spawn_blocking(move || {
            Ok::<_, StoreError>((
                store.get_webhook(&c.account_id, &c.webhook_id)?,
                store.event_body(&c.account_id, &c.event_id)?,
            ))
        })
        .await
        .map_err(|e| StoreError::Corrupt(e.to_string()))??;
        let (Some(webhook), Some(body)) = (webhook, body) else {
            // Subscription deleted (its deliveries are cancelled) or event removed by retention.
            return Ok(());
        };
        let started = self.clock.now_ms();
        if claim.attempt_count == 0 {
            self.metrics
                .first_attempt_latency_seconds
                .observe((started - claim.created_at).max(0) as f64 / 1000.0);
        }
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
        let (status, next) = match outcome {
            Outcome::Succeeded => ("succeeded", None),
            Outcome::Retry { at_ms } => ("pending", Some(at_ms)),
            Outcome::Failed | Outcome::Disable => ("failed", None),
            Outcome::Expired => ("expired", None),
        };
        let row = AttemptRow {
            at: started,
            http_status: result.http_status,
            error: result.error.map(|e| e.as_str().to_string()),
            duration_ms: result.duration_ms as i64,
            response_body: result.response_body,
        };
        self.metrics
            .attempt_duration_seconds
            .observe(row.duration_ms as f64 / 1000.0);
        self.metrics
            .deliveries
            .get_or_create(&qss_api::metrics::OutcomeLabels {
                outcome: status.to_string(),
            })
            .inc();
        let store = self.store.clone();
        let c = claim.clone();
        let disable = outcome == Outcome::Disable;
        tokio::task::spawn_blocking(move || {
            if !store.record_attempt(&c, &row, status, next)? {
                tracing::warn!(delivery = %c.delivery_id, "lease lost before the attempt was recorded");
            }
            if disable {
                store.disable_webhook(&c.account_id, &c.webhook_id)?;
                tracing::info!(webhook = %c.webhook_id, "endpoint answered 410 Gone: subscription disabled");
            }
            Ok::<_, StoreError>(())
        })
        .await
        .map_err(|e| StoreError::Corrupt(e.to_string()))?
    }
}
