//! Webhook subscriptions, the delivery outbox and attempts.
//!
//! Deliveries are created in the transaction that commits their event (see `commit`), one per
//! subscription active at that moment, so an event and its pending deliveries are durable
//! together. Workers claim due deliveries with a lease (`lease_until`) and a fencing token
//! (`lease_token`): a worker that lost its lease cannot record a result over a newer claim.

use rusqlite::{OptionalExtension, Row, params};

use super::SqliteStore;
use crate::columns::{DELIVERY_COLUMNS, DeliveryColumns, WEBHOOK_COLUMNS, events_json};
use crate::{
    AttemptRecord, AttemptRow, ClaimedDelivery, DeliveryRecord, StoreError, WebhookRecord,
};

/// Most subscriptions per account (SPEC 7.1).
pub const MAX_WEBHOOKS: i64 = 20;

fn webhook_from_row(r: &Row<'_>) -> rusqlite::Result<WebhookRecord> {
    let events: String = r.get(3)?;
    Ok(WebhookRecord {
        account_id: r.get(0)?,
        webhook_id: r.get(1)?,
        url: r.get(2)?,
        events: serde_json::from_str(&events).unwrap_or_default(),
        secret: r.get(4)?,
        previous_secret: r.get(5)?,
        previous_secret_until: r.get(6)?,
        status: r.get(7)?,
        description: r.get(8)?,
        max_age_seconds: r.get(9)?,
        created_at: r.get(10)?,
        validated_at: r.get(11)?,
        next_validation_at: r.get(12)?,
        validation_failures: r.get(13)?,
    })
}

fn delivery_from_row(r: &Row<'_>, now: i64) -> rusqlite::Result<DeliveryRecord> {
    Ok(DeliveryColumns {
        delivery_id: r.get(0)?,
        webhook_id: r.get(1)?,
        event_id: r.get(2)?,
        event_type: r.get(3)?,
        status: r.get(4)?,
        attempt_count: r.get(5)?,
        next_attempt_at: r.get(6)?,
        created_at: r.get(7)?,
        lease_until: r.get(8)?,
        last_attempt_at: r.get(9)?,
        last_http_status: r.get(10)?,
        last_error: r.get(11)?,
        last_duration_ms: r.get(12)?,
    }
    .into_record(now))
}

impl SqliteStore {
    /// Inserts a subscription unless the account has 20 already; false then.
    pub fn insert_webhook(&self, w: &WebhookRecord) -> Result<bool, StoreError> {
        self.write(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let n: i64 =
                tx.query_row("SELECT COUNT(*) FROM webhooks WHERE account_id = ?1", [&w.account_id], |r| r.get(0))?;
            if n >= MAX_WEBHOOKS {
                return Ok(false);
            }
            tx.execute(
                &format!("INSERT INTO webhooks ({WEBHOOK_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"),
                params![
                    w.account_id,
                    w.webhook_id,
                    w.url,
                    events_json(&w.events),
                    w.secret,
                    w.previous_secret,
                    w.previous_secret_until,
                    w.status,
                    w.description,
                    w.max_age_seconds,
                    w.created_at,
                    w.validated_at,
                    w.next_validation_at,
                    w.validation_failures
                ],
            )?;
            tx.commit()?;
            Ok(true)
        })
    }

    pub fn get_webhook(
        &self,
        account_id: &str,
        webhook_id: &str,
    ) -> Result<Option<WebhookRecord>, StoreError> {
        self.read(|c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE account_id = ?1 AND webhook_id = ?2"
            ))?
            .query_row(params![account_id, webhook_id], webhook_from_row)
            .optional()?)
        })
    }

    /// Every subscription of an account, oldest first.
    pub fn list_webhooks(&self, account_id: &str) -> Result<Vec<WebhookRecord>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE account_id = ?1 ORDER BY created_at, webhook_id"
            ))?;
            let rows = st.query_map([account_id], webhook_from_row)?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// Subscriptions whose periodic re-validation is due.
    pub fn webhooks_due_for_validation(&self, now: i64) -> Result<Vec<WebhookRecord>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {WEBHOOK_COLUMNS} FROM webhooks
                 WHERE status IN ('active', 'paused') AND next_validation_at <= ?1"
            ))?;
            let rows = st
                .query_map([now], webhook_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// Replaces a subscription. Leaving `active` cancels (`disabled`) pending deliveries, as a
    /// pause only holds them. Returns false if it is gone.
    pub fn update_webhook(&self, w: &WebhookRecord) -> Result<bool, StoreError> {
        self.write(|c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "UPDATE webhooks SET url = ?3, events = ?4, secret = ?5, previous_secret = ?6,
                   previous_secret_until = ?7, status = ?8, description = ?9, max_age_seconds = ?10,
                   validated_at = ?11, next_validation_at = ?12, validation_failures = ?13
                 WHERE account_id = ?1 AND webhook_id = ?2",
                params![
                    w.account_id,
                    w.webhook_id,
                    w.url,
                    events_json(&w.events),
                    w.secret,
                    w.previous_secret,
                    w.previous_secret_until,
                    w.status,
                    w.description,
                    w.max_age_seconds,
                    w.validated_at,
                    w.next_validation_at,
                    w.validation_failures
                ],
            )?;
            if w.status == "disabled" {
                cancel_pending(&tx, &w.account_id, &w.webhook_id)?;
            }
            tx.commit()?;
            Ok(n == 1)
        })
    }

    /// Deletes a subscription and cancels its pending deliveries.
    pub fn delete_webhook(&self, account_id: &str, webhook_id: &str) -> Result<bool, StoreError> {
        self.write(|c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "DELETE FROM webhooks WHERE account_id = ?1 AND webhook_id = ?2",
                params![account_id, webhook_id],
            )?;
            cancel_pending(&tx, account_id, webhook_id)?;
            tx.commit()?;
            Ok(n == 1)
        })
    }

    /// Active subscriptions with at least one due, unleased delivery.
    pub fn webhooks_with_due_work(&self, now: i64) -> Result<Vec<WebhookRecord>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {WEBHOOK_COLUMNS} FROM webhooks w WHERE w.status = 'active' AND EXISTS (
                   SELECT 1 FROM deliveries d
                   WHERE d.webhook_id = w.webhook_id AND d.status = 'pending' AND d.next_attempt_at <= ?1
                     AND (d.lease_until IS NULL OR d.lease_until < ?1))"
            ))?;
            let rows = st.query_map([now], webhook_from_row)?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// Claims up to `limit` due deliveries of one subscription, oldest due first, under a
    /// lease until `now + lease_ms`, with their events' bodies.
    pub fn claim_due(
        &self,
        account_id: &str,
        webhook_id: &str,
        now: i64,
        limit: usize,
        lease_ms: i64,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        self.write(|c| {
            let tx = c.transaction()?;
            // Deliveries past the subscription's max_age_seconds expire instead of being
            // attempted (a manual retry, `auto_retry = 0`, is exempt). Only the head of the
            // queue, the rows this claim would take, is examined: scanning the whole due
            // backlog on every claim made claiming quadratic in the backlog. Expired rows
            // further back are expired when they reach the head (the claim below skips them).
            let cutoff = tx
                .prepare_cached(
                    "SELECT ?3 - 1000 * max_age_seconds FROM webhooks
                     WHERE account_id = ?1 AND webhook_id = ?2",
                )?
                .query_row(params![account_id, webhook_id, now], |r| r.get::<_, Option<i64>>(0))
                .optional()?
                .flatten();
            // No max_age_seconds: nothing expires.
            let cutoff = cutoff.unwrap_or(i64::MIN);
            tx.prepare_cached(
                "UPDATE deliveries SET status = 'expired', next_attempt_at = NULL
                 WHERE rowid IN (
                   SELECT rowid FROM deliveries
                   WHERE webhook_id = ?2 AND status = 'pending' AND next_attempt_at <= ?3
                     AND (lease_until IS NULL OR lease_until < ?3) AND account_id = ?1
                   ORDER BY next_attempt_at LIMIT ?4)
                 AND auto_retry = 1 AND created_at < ?5",
            )?
            .execute(params![account_id, webhook_id, now, limit as i64, cutoff])?;
            let mut claimed = {
                let mut st = tx.prepare_cached(
                    "UPDATE deliveries SET lease_until = ?3 + ?5, lease_token = COALESCE(lease_token, 0) + 1
                     WHERE rowid IN (
                       SELECT rowid FROM deliveries
                       WHERE webhook_id = ?2 AND status = 'pending' AND next_attempt_at <= ?3
                         AND (lease_until IS NULL OR lease_until < ?3) AND account_id = ?1
                         AND NOT (auto_retry = 1 AND created_at < ?6)
                       ORDER BY next_attempt_at LIMIT ?4)
                     RETURNING account_id, delivery_id, webhook_id, event_id, attempt_count, auto_retry,
                               created_at, lease_token",
                )?;
                st.query_map(params![account_id, webhook_id, now, limit as i64, lease_ms, cutoff], |r| {
                    Ok(ClaimedDelivery {
                        account_id: r.get(0)?,
                        delivery_id: r.get(1)?,
                        webhook_id: r.get(2)?,
                        event_id: r.get(3)?,
                        attempt_count: r.get(4)?,
                        auto_retry: r.get(5)?,
                        created_at: r.get(6)?,
                        lease_token: r.get(7)?,
                        body: None,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?
            };
            {
                let mut st = tx.prepare_cached("SELECT body FROM events WHERE account_id = ?1 AND id = ?2")?;
                for d in &mut claimed {
                    d.body = st.query_row(params![d.account_id, d.event_id], |r| r.get(0)).optional()?;
                }
            }
            tx.commit()?;
            claimed.sort_by_key(|d| d.created_at);
            Ok(claimed)
        })
    }

    /// Gives claims back untouched (shutdown: nobody will attempt them).
    pub fn release_claims(&self, claims: &[ClaimedDelivery]) -> Result<(), StoreError> {
        self.write(|c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare_cached(
                    "UPDATE deliveries SET lease_until = NULL
                     WHERE account_id = ?1 AND delivery_id = ?2 AND lease_token = ?3",
                )?;
                for claim in claims {
                    st.execute(params![
                        claim.account_id,
                        claim.delivery_id,
                        claim.lease_token
                    ])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Records attempts and their deliveries' next states in one transaction, each only if
    /// its lease is still held (a lost lease means another worker owns the delivery now).
    /// Subscriptions whose endpoint answered 410 are disabled in the same transaction.
    /// Returns how many were recorded.
    pub fn record_attempts(&self, results: &[AttemptRecord]) -> Result<usize, StoreError> {
        self.write(|c| {
            let tx = c.transaction()?;
            let mut recorded = 0;
            {
                let mut update = tx.prepare_cached(
                    "UPDATE deliveries SET attempt_count = attempt_count + 1, status = ?4, next_attempt_at = ?5,
                       lease_until = NULL, last_attempt_at = ?6, last_http_status = ?7, last_error = ?8,
                       last_duration_ms = ?9
                     WHERE account_id = ?1 AND delivery_id = ?2 AND lease_token = ?3 AND status = 'pending'",
                )?;
                let mut insert = tx.prepare_cached(
                    "INSERT INTO attempts (account_id, delivery_id, n, at, http_status, error, duration_ms, response_body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?;
                for r in results {
                    let (claim, attempt) = (&r.claim, &r.attempt);
                    let n = update.execute(params![
                        claim.account_id,
                        claim.delivery_id,
                        claim.lease_token,
                        r.status,
                        r.next_attempt_at,
                        attempt.at,
                        attempt.http_status,
                        attempt.error,
                        attempt.duration_ms
                    ])?;
                    if n == 0 {
                        continue;
                    }
                    recorded += 1;
                    insert.execute(params![
                        claim.account_id,
                        claim.delivery_id,
                        claim.attempt_count + 1,
                        attempt.at,
                        attempt.http_status,
                        attempt.error,
                        attempt.duration_ms,
                        attempt.response_body
                    ])?;
                }
            }
            for r in results.iter().filter(|r| r.disable_webhook) {
                tx.execute(
                    "UPDATE webhooks SET status = 'disabled' WHERE account_id = ?1 AND webhook_id = ?2",
                    params![r.claim.account_id, r.claim.webhook_id],
                )?;
                cancel_pending(&tx, &r.claim.account_id, &r.claim.webhook_id)?;
            }
            tx.commit()?;
            Ok(recorded)
        })
    }

    /// A subscription's deliveries, newest first by `(created_at, id)`, after `before`.
    #[allow(clippy::too_many_arguments)]
    pub fn list_deliveries(
        &self,
        account_id: &str,
        webhook_id: &str,
        status: Option<&str>,
        event_type: Option<&str>,
        from: i64,
        to: i64,
        before: Option<(i64, String)>,
        limit: usize,
        now: i64,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let (before_ts, before_id) = before.unwrap_or((i64::MAX, String::new()));
        self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries
                 WHERE account_id = ?1 AND webhook_id = ?2 AND created_at >= ?3 AND created_at < ?4
                   AND (?5 IS NULL OR status = ?5) AND (?6 IS NULL OR event_type = ?6)
                   AND (created_at < ?7 OR (created_at = ?7 AND ?8 <> '' AND delivery_id < ?8))
                 ORDER BY created_at DESC, delivery_id DESC LIMIT ?9"
            ))?;
            let rows = st
                .query_map(
                    params![
                        account_id,
                        webhook_id,
                        from,
                        to,
                        status,
                        event_type,
                        before_ts,
                        before_id,
                        limit as i64
                    ],
                    |r| delivery_from_row(r, now),
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    pub fn get_delivery(
        &self,
        account_id: &str,
        webhook_id: &str,
        delivery_id: &str,
        now: i64,
    ) -> Result<Option<(DeliveryRecord, Vec<AttemptRow>)>, StoreError> {
        self.read(|c| {
            let d = c
                .prepare_cached(&format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries
                     WHERE account_id = ?1 AND webhook_id = ?2 AND delivery_id = ?3"
                ))?
                .query_row(params![account_id, webhook_id, delivery_id], |r| {
                    delivery_from_row(r, now)
                })
                .optional()?;
            let Some(d) = d else { return Ok(None) };
            let mut st = c.prepare_cached(
                "SELECT at, http_status, error, duration_ms, response_body FROM attempts
                 WHERE account_id = ?1 AND delivery_id = ?2 ORDER BY n",
            )?;
            let attempts = st
                .query_map(params![account_id, delivery_id], |r| {
                    Ok(AttemptRow {
                        at: r.get(0)?,
                        http_status: r.get::<_, Option<i64>>(1)?.map(|s| s as u16),
                        error: r.get(2)?,
                        duration_ms: r.get(3)?,
                        response_body: r.get(4)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some((d, attempts)))
        })
    }

    /// Manual retry (SPEC 7.5): a finished delivery gets one attempt now (no automatic
    /// retries after it), a pending one its next attempt now. False if in flight.
    pub fn retry_delivery(
        &self,
        account_id: &str,
        delivery_id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.write(|c| {
            let n = c.execute(
                "UPDATE deliveries SET next_attempt_at = ?3,
                   auto_retry = CASE WHEN status = 'pending' THEN auto_retry ELSE 0 END,
                   status = 'pending'
                 WHERE account_id = ?1 AND delivery_id = ?2 AND (lease_until IS NULL OR lease_until < ?3)",
                params![account_id, delivery_id, now],
            )?;
            Ok(n == 1)
        })
    }

    /// New deliveries of the stored events in `[from, to)` matching `types`, to one
    /// subscription (replay); returns how many.
    pub fn replay(
        &self,
        account_id: &str,
        webhook_id: &str,
        types: &[String],
        from: i64,
        to: i64,
        now: i64,
    ) -> Result<usize, StoreError> {
        let types = serde_json::to_string(types).expect("strings serialize");
        self.write(|c| {
            Ok(c.execute(
                "INSERT INTO deliveries (account_id, delivery_id, webhook_id, event_id, event_type, status,
                                         next_attempt_at, created_at)
                 SELECT account_id, 'dlv_' || printf('%012x', ?5) || lower(hex(randomblob(10))), ?2, id, event_type, 'pending', ?5, ?5
                 FROM events WHERE account_id = ?1 AND event_ts >= ?3 AND event_ts < ?4
                   AND event_type IN (SELECT value FROM json_each(?6))",
                params![account_id, webhook_id, from, to, now, types],
            )?)
        })
    }

    /// How many events of an account lie in `[from, to)` with these types (replay's limit).
    pub fn count_events(
        &self,
        account_id: &str,
        types: &[String],
        from: i64,
        to: i64,
    ) -> Result<i64, StoreError> {
        let types = serde_json::to_string(types).expect("strings serialize");
        self.read(|c| {
            Ok(c.query_row(
                "SELECT COUNT(*) FROM events WHERE account_id = ?1 AND event_ts >= ?2 AND event_ts < ?3
                   AND event_type IN (SELECT value FROM json_each(?4))",
                params![account_id, from, to, types],
                |r| r.get(0),
            )?)
        })
    }

    /// Pending deliveries (metrics).
    pub fn pending_deliveries(&self) -> Result<i64, StoreError> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT COUNT(*) FROM deliveries WHERE status = 'pending'",
                [],
                |r| r.get(0),
            )?)
        })
    }
}

fn cancel_pending(
    tx: &rusqlite::Transaction<'_>,
    account_id: &str,
    webhook_id: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL
         WHERE account_id = ?1 AND webhook_id = ?2 AND status = 'pending'",
        params![account_id, webhook_id],
    )?;
    Ok(())
}

/// Creates one pending delivery per subscription active now whose events include the
/// event's type; called in the transaction that inserts the event. Delivery ids start with the
/// creation time (48 bits of milliseconds, then 80 random bits), so that inserts append to the
/// primary-key index instead of splitting pages all over it.
pub(super) fn create_deliveries(
    tx: &rusqlite::Transaction<'_>,
    account_id: &str,
    event_id: &str,
    event_type: &str,
    now: i64,
) -> Result<usize, StoreError> {
    Ok(tx
        .prepare_cached(
            "INSERT INTO deliveries (account_id, delivery_id, webhook_id, event_id, event_type, status,
                                     next_attempt_at, created_at)
             SELECT account_id, 'dlv_' || printf('%012x', ?4) || lower(hex(randomblob(10))), webhook_id, ?2, ?3, 'pending', ?4, ?4
             FROM webhooks WHERE account_id = ?1 AND status = 'active'
               AND ?3 IN (SELECT value FROM json_each(webhooks.events))",
        )?
        .execute(params![account_id, event_id, event_type, now])?)
}
