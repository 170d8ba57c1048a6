//! Webhook subscriptions, the delivery outbox and attempts, as in `sqlite/webhooks.rs`. Claims
//! take rows with `FOR UPDATE SKIP LOCKED`, so nodes claiming at once never take the same
//! delivery, under the same lease and fencing token.

use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::PgStore;
use crate::columns::{DELIVERY_COLUMNS, DeliveryColumns, WEBHOOK_COLUMNS, events_json};
use crate::sqlite::MAX_WEBHOOKS;
use crate::{
    AttemptRecord, AttemptRow, ClaimedDelivery, DeliveryRecord, StoreError, WebhookRecord,
};

fn webhook_from_row(r: &Row) -> Result<WebhookRecord, StoreError> {
    let events: String = r.try_get(3)?;
    Ok(WebhookRecord {
        account_id: r.try_get(0)?,
        webhook_id: r.try_get(1)?,
        url: r.try_get(2)?,
        events: serde_json::from_str(&events).unwrap_or_default(),
        secret: r.try_get(4)?,
        previous_secret: r.try_get(5)?,
        previous_secret_until: r.try_get(6)?,
        status: r.try_get(7)?,
        description: r.try_get(8)?,
        max_age_seconds: r.try_get(9)?,
        created_at: r.try_get(10)?,
        validated_at: r.try_get(11)?,
        next_validation_at: r.try_get(12)?,
        validation_failures: r.try_get(13)?,
    })
}

fn delivery_from_row(r: &Row, now: i64) -> Result<DeliveryRecord, StoreError> {
    Ok(DeliveryColumns {
        delivery_id: r.try_get(0)?,
        webhook_id: r.try_get(1)?,
        event_id: r.try_get(2)?,
        event_type: r.try_get(3)?,
        status: r.try_get(4)?,
        attempt_count: r.try_get(5)?,
        next_attempt_at: r.try_get(6)?,
        created_at: r.try_get(7)?,
        lease_until: r.try_get(8)?,
        last_attempt_at: r.try_get(9)?,
        last_http_status: r.try_get(10)?,
        last_error: r.try_get(11)?,
        last_duration_ms: r.try_get(12)?,
    }
    .into_record(now))
}

/// Statement parameters.
type Params<'a> = [&'a (dyn ToSql + Sync)];

async fn cancel_pending(
    tx: &deadpool_postgres::Transaction<'_>,
    account_id: &str,
    webhook_id: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL
         WHERE account_id = $1 AND webhook_id = $2 AND status = 'pending'",
        &[&account_id, &webhook_id],
    )
    .await?;
    Ok(())
}

impl PgStore {
    /// Inserts a subscription unless the account has 20 already; false then. The account's
    /// row is locked for the count, so two nodes cannot both add the 20th.
    pub async fn insert_webhook(&self, w: &WebhookRecord) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "SELECT 1 FROM accounts WHERE account_id = $1 FOR UPDATE",
            &[&w.account_id],
        )
        .await?;
        let n: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM webhooks WHERE account_id = $1",
                &[&w.account_id],
            )
            .await?
            .try_get(0)?;
        if n >= MAX_WEBHOOKS {
            return Ok(false);
        }
        let events = events_json(&w.events);
        let params: [&(dyn ToSql + Sync); 14] = [
            &w.account_id,
            &w.webhook_id,
            &w.url,
            &events,
            &w.secret,
            &w.previous_secret,
            &w.previous_secret_until,
            &w.status,
            &w.description,
            &w.max_age_seconds,
            &w.created_at,
            &w.validated_at,
            &w.next_validation_at,
            &w.validation_failures,
        ];
        tx.execute(
            &format!(
                "INSERT INTO webhooks ({WEBHOOK_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
            ),
            &params,
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn get_webhook(
        &self,
        account_id: &str,
        webhook_id: &str,
    ) -> Result<Option<WebhookRecord>, StoreError> {
        let rows = self
            .webhooks_where(
                "account_id = $1 AND webhook_id = $2",
                &[&account_id, &webhook_id],
            )
            .await?;
        Ok(rows.into_iter().next())
    }

    /// Every subscription of an account, oldest first.
    pub async fn list_webhooks(&self, account_id: &str) -> Result<Vec<WebhookRecord>, StoreError> {
        self.webhooks_where(
            "account_id = $1 ORDER BY created_at, webhook_id",
            &[&account_id],
        )
        .await
    }

    /// Subscriptions whose periodic re-validation is due.
    pub async fn webhooks_due_for_validation(
        &self,
        now: i64,
    ) -> Result<Vec<WebhookRecord>, StoreError> {
        self.webhooks_where(
            "status IN ('active', 'paused') AND next_validation_at <= $1",
            &[&now],
        )
        .await
    }

    /// Active subscriptions with at least one due, unleased delivery.
    pub async fn webhooks_with_due_work(&self, now: i64) -> Result<Vec<WebhookRecord>, StoreError> {
        self.webhooks_where(
            "status = 'active' AND EXISTS (
               SELECT 1 FROM deliveries d
               WHERE d.webhook_id = webhooks.webhook_id AND d.status = 'pending'
                 AND d.next_attempt_at <= $1 AND (d.lease_until IS NULL OR d.lease_until < $1))",
            &[&now],
        )
        .await
    }

    async fn webhooks_where(
        &self,
        condition: &str,
        params: &Params<'_>,
    ) -> Result<Vec<WebhookRecord>, StoreError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE {condition}"
            ))
            .await?;
        c.query(&st, params)
            .await?
            .iter()
            .map(webhook_from_row)
            .collect()
    }

    /// Replaces a subscription. Leaving `active` for `disabled` cancels pending deliveries,
    /// as a pause only holds them. Returns false if it is gone.
    pub async fn update_webhook(&self, w: &WebhookRecord) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let events = events_json(&w.events);
        let params: [&(dyn ToSql + Sync); 13] = [
            &w.account_id,
            &w.webhook_id,
            &w.url,
            &events,
            &w.secret,
            &w.previous_secret,
            &w.previous_secret_until,
            &w.status,
            &w.description,
            &w.max_age_seconds,
            &w.validated_at,
            &w.next_validation_at,
            &w.validation_failures,
        ];
        let n = tx
            .execute(
                "UPDATE webhooks SET url = $3, events = $4, secret = $5, previous_secret = $6,
                   previous_secret_until = $7, status = $8, description = $9,
                   max_age_seconds = $10, validated_at = $11, next_validation_at = $12,
                   validation_failures = $13
                 WHERE account_id = $1 AND webhook_id = $2",
                &params,
            )
            .await?;
        if w.status == "disabled" {
            cancel_pending(&tx, &w.account_id, &w.webhook_id).await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Deletes a subscription and cancels its pending deliveries.
    pub async fn delete_webhook(
        &self,
        account_id: &str,
        webhook_id: &str,
    ) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let n = tx
            .execute(
                "DELETE FROM webhooks WHERE account_id = $1 AND webhook_id = $2",
                &[&account_id, &webhook_id],
            )
            .await?;
        cancel_pending(&tx, account_id, webhook_id).await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Claims up to `limit` due deliveries of one subscription, oldest due first, under a
    /// lease until `now + lease_ms`, with their events' bodies. Rows another node is claiming
    /// at this moment are skipped, not waited for.
    pub async fn claim_due(
        &self,
        account_id: &str,
        webhook_id: &str,
        now: i64,
        limit: usize,
        lease_ms: i64,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let limit = limit as i64;
        // Past max_age_seconds: expired instead of attempted (manual retries exempt); only
        // among the rows this claim would take, as in SQLite.
        let cutoff: Option<i64> = tx
            .query_opt(
                "SELECT $3::BIGINT - 1000 * max_age_seconds FROM webhooks
                 WHERE account_id = $1 AND webhook_id = $2",
                &[&account_id, &webhook_id, &now],
            )
            .await?
            .and_then(|r| r.get::<_, Option<i64>>(0));
        let cutoff = cutoff.unwrap_or(i64::MIN);
        tx.execute(
            "UPDATE deliveries SET status = 'expired', next_attempt_at = NULL
             WHERE ctid IN (
               SELECT ctid FROM deliveries
               WHERE webhook_id = $2 AND status = 'pending' AND next_attempt_at <= $3
                 AND (lease_until IS NULL OR lease_until < $3) AND account_id = $1
               ORDER BY next_attempt_at LIMIT $4
               FOR UPDATE SKIP LOCKED)
             AND auto_retry AND created_at < $5",
            &[&account_id, &webhook_id, &now, &limit, &cutoff],
        )
        .await?;
        let lease_until = now + lease_ms;
        let rows = tx
            .query(
                "UPDATE deliveries d SET lease_until = $5,
                   lease_token = COALESCE(d.lease_token, 0) + 1
                 WHERE ctid IN (
                   SELECT ctid FROM deliveries
                   WHERE webhook_id = $2 AND status = 'pending' AND next_attempt_at <= $3
                     AND (lease_until IS NULL OR lease_until < $3) AND account_id = $1
                     AND NOT (auto_retry AND created_at < $6)
                   ORDER BY next_attempt_at LIMIT $4
                   FOR UPDATE SKIP LOCKED)
                 RETURNING d.account_id, d.delivery_id, d.webhook_id, d.event_id,
                           d.attempt_count, d.auto_retry, d.created_at, d.lease_token,
                           (SELECT body FROM events e
                            WHERE e.account_id = d.account_id AND e.id = d.event_id)",
                &[
                    &account_id,
                    &webhook_id,
                    &now,
                    &limit,
                    &lease_until,
                    &cutoff,
                ],
            )
            .await?;
        tx.commit().await?;
        let mut claimed = rows
            .iter()
            .map(|r| {
                Ok(ClaimedDelivery {
                    account_id: r.try_get(0)?,
                    delivery_id: r.try_get(1)?,
                    webhook_id: r.try_get(2)?,
                    event_id: r.try_get(3)?,
                    attempt_count: r.try_get(4)?,
                    auto_retry: r.try_get(5)?,
                    created_at: r.try_get(6)?,
                    lease_token: r.try_get(7)?,
                    body: r.try_get(8)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        claimed.sort_by_key(|d| d.created_at);
        Ok(claimed)
    }

    /// Gives claims back untouched (shutdown: nobody will attempt them).
    pub async fn release_claims(&self, claims: &[ClaimedDelivery]) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let st = tx
            .prepare_cached(
                "UPDATE deliveries SET lease_until = NULL
                 WHERE account_id = $1 AND delivery_id = $2 AND lease_token = $3",
            )
            .await?;
        for claim in claims {
            tx.execute(
                &st,
                &[&claim.account_id, &claim.delivery_id, &claim.lease_token],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records attempts and their deliveries' next states in one transaction, each only if
    /// its lease is still held. Subscriptions whose endpoint answered 410 are disabled in the
    /// same transaction. Returns how many were recorded.
    pub async fn record_attempts(&self, results: &[AttemptRecord]) -> Result<usize, StoreError> {
        // Set-based: one statement for every result of the batch (a statement per result
        // cost two round trips each). A delivery is recorded once per batch.
        let mut seen = std::collections::HashSet::new();
        let rows: Vec<&AttemptRecord> = results
            .iter()
            .filter(|r| seen.insert((&r.claim.account_id, &r.claim.delivery_id)))
            .collect();
        let accounts: Vec<&str> = rows.iter().map(|r| r.claim.account_id.as_str()).collect();
        let ids: Vec<&str> = rows.iter().map(|r| r.claim.delivery_id.as_str()).collect();
        let tokens: Vec<i64> = rows.iter().map(|r| r.claim.lease_token).collect();
        let statuses: Vec<&str> = rows.iter().map(|r| r.status).collect();
        let next: Vec<Option<i64>> = rows.iter().map(|r| r.next_attempt_at).collect();
        let at: Vec<i64> = rows.iter().map(|r| r.attempt.at).collect();
        let http: Vec<Option<i64>> = rows
            .iter()
            .map(|r| r.attempt.http_status.map(i64::from))
            .collect();
        let errors: Vec<Option<&str>> = rows.iter().map(|r| r.attempt.error.as_deref()).collect();
        let durations: Vec<i64> = rows.iter().map(|r| r.attempt.duration_ms).collect();
        let numbers: Vec<i64> = rows.iter().map(|r| r.claim.attempt_count + 1).collect();
        let bodies: Vec<&str> = rows
            .iter()
            .map(|r| r.attempt.response_body.as_str())
            .collect();
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let st = tx
            .prepare_cached(
                "WITH r AS (
                     SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::BIGINT[], $4::TEXT[],
                                          $5::BIGINT[], $6::BIGINT[], $7::BIGINT[], $8::TEXT[],
                                          $9::BIGINT[], $10::BIGINT[], $11::TEXT[])
                         AS r(a, d, token, status, next, at, http, error, duration, n, body)
                 ), recorded AS (
                     UPDATE deliveries SET attempt_count = attempt_count + 1, status = r.status,
                       next_attempt_at = r.next, lease_until = NULL, last_attempt_at = r.at,
                       last_http_status = r.http, last_error = r.error,
                       last_duration_ms = r.duration
                     FROM r
                     WHERE deliveries.account_id = r.a AND deliveries.delivery_id = r.d
                       AND deliveries.lease_token = r.token AND deliveries.status = 'pending'
                     RETURNING deliveries.account_id, deliveries.delivery_id
                 ), attempts AS (
                     INSERT INTO attempts (account_id, delivery_id, n, at, http_status, error,
                                           duration_ms, response_body)
                     SELECT r.a, r.d, r.n, r.at, r.http, r.error, r.duration, r.body
                     FROM r JOIN recorded ON recorded.account_id = r.a
                                         AND recorded.delivery_id = r.d
                 )
                 SELECT count(*) FROM recorded",
            )
            .await?;
        let params: [&(dyn ToSql + Sync); 11] = [
            &accounts, &ids, &tokens, &statuses, &next, &at, &http, &errors, &durations, &numbers,
            &bodies,
        ];
        let recorded: i64 = tx.query_one(&st, &params).await?.try_get(0)?;
        let recorded = recorded as usize;
        for r in results.iter().filter(|r| r.disable_webhook) {
            tx.execute(
                "UPDATE webhooks SET status = 'disabled' WHERE account_id = $1 AND webhook_id = $2",
                &[&r.claim.account_id, &r.claim.webhook_id],
            )
            .await?;
            cancel_pending(&tx, &r.claim.account_id, &r.claim.webhook_id).await?;
        }
        tx.commit().await?;
        Ok(recorded)
    }

    /// A subscription's deliveries, newest first by `(created_at, id)`, after `before`.
    #[allow(clippy::too_many_arguments)]
    pub async fn list_deliveries(
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
        let limit = limit as i64;
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries
                 WHERE account_id = $1 AND webhook_id = $2 AND created_at >= $3 AND created_at < $4
                   AND ($5::TEXT IS NULL OR status = $5) AND ($6::TEXT IS NULL OR event_type = $6)
                   AND (created_at < $7 OR (created_at = $7 AND $8 <> '' AND delivery_id < $8))
                 ORDER BY created_at DESC, delivery_id DESC LIMIT $9"
            ))
            .await?;
        c.query(
            &st,
            &[
                &account_id,
                &webhook_id,
                &from,
                &to,
                &status,
                &event_type,
                &before_ts,
                &before_id,
                &limit,
            ],
        )
        .await?
        .iter()
        .map(|r| delivery_from_row(r, now))
        .collect()
    }

    pub async fn get_delivery(
        &self,
        account_id: &str,
        webhook_id: &str,
        delivery_id: &str,
        now: i64,
    ) -> Result<Option<(DeliveryRecord, Vec<AttemptRow>)>, StoreError> {
        let c = self.client().await?;
        let Some(row) = c
            .query_opt(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries
                     WHERE account_id = $1 AND webhook_id = $2 AND delivery_id = $3"
                ),
                &[&account_id, &webhook_id, &delivery_id],
            )
            .await?
        else {
            return Ok(None);
        };
        let d = delivery_from_row(&row, now)?;
        let attempts = c
            .query(
                "SELECT at, http_status, error, duration_ms, response_body FROM attempts
                 WHERE account_id = $1 AND delivery_id = $2 ORDER BY n",
                &[&account_id, &delivery_id],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(AttemptRow {
                    at: r.try_get(0)?,
                    http_status: r.try_get::<_, Option<i64>>(1)?.map(|s| s as u16),
                    error: r.try_get(2)?,
                    duration_ms: r.try_get(3)?,
                    response_body: r.try_get(4)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Some((d, attempts)))
    }

    /// Manual retry (SPEC 7.5): a finished delivery gets one attempt now (no automatic
    /// retries after it), a pending one its next attempt now. False if in flight.
    pub async fn retry_delivery(
        &self,
        account_id: &str,
        delivery_id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE deliveries SET next_attempt_at = $3,
                   auto_retry = CASE WHEN status = 'pending' THEN auto_retry ELSE FALSE END,
                   status = 'pending'
                 WHERE account_id = $1 AND delivery_id = $2
                   AND (lease_until IS NULL OR lease_until < $3)",
                &[&account_id, &delivery_id, &now],
            )
            .await?;
        Ok(n == 1)
    }

    /// New deliveries of the stored events in `[from, to)` matching `types`, to one
    /// subscription (replay); returns how many.
    pub async fn replay(
        &self,
        account_id: &str,
        webhook_id: &str,
        types: &[String],
        from: i64,
        to: i64,
        now: i64,
    ) -> Result<usize, StoreError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "INSERT INTO deliveries (account_id, delivery_id, webhook_id, event_id, event_type,
                                         status, next_attempt_at, created_at)
                 SELECT account_id,
                        'dlv_' || lpad(to_hex($5::BIGINT), 12, '0')
                               || substr(replace(gen_random_uuid()::TEXT, '-', ''), 1, 20),
                        $2, id, event_type, 'pending', $5, $5
                 FROM events WHERE account_id = $1 AND event_ts >= $3 AND event_ts < $4
                   AND event_type = ANY($6)",
                &[&account_id, &webhook_id, &from, &to, &now, &types],
            )
            .await?;
        Ok(n as usize)
    }

    /// How many events of an account lie in `[from, to)` with these types (replay's limit).
    pub async fn count_events(
        &self,
        account_id: &str,
        types: &[String],
        from: i64,
        to: i64,
    ) -> Result<i64, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "SELECT COUNT(*) FROM events WHERE account_id = $1 AND event_ts >= $2
                   AND event_ts < $3 AND event_type = ANY($4)",
                &[&account_id, &from, &to, &types],
            )
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Pending deliveries (metrics).
    pub async fn pending_deliveries(&self) -> Result<i64, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "SELECT COUNT(*) FROM deliveries WHERE status = 'pending'",
                &[],
            )
            .await?;
        Ok(row.try_get(0)?)
    }
}
