//! Retention (SPEC 10) and the purge of deleted accounts, in batches of at most 5,000 rows, as
//! in `sqlite/retention.rs`: each batch is one short statement or transaction, so no lock is
//! held long.

use std::collections::HashMap;

use super::PgStore;
use crate::{RETENTION_BATCH, StoreError};

const BATCH: i64 = RETENTION_BATCH as i64;

impl PgStore {
    /// Deletes up to one batch of an account's events older than `before`, except those with a
    /// pending delivery; returns how many.
    pub async fn delete_old_events(
        &self,
        account_id: &str,
        before: i64,
    ) -> Result<usize, StoreError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "DELETE FROM events WHERE seq IN (
                   SELECT seq FROM events e WHERE account_id = $1 AND event_ts < $2
                     AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.account_id = e.account_id
                                     AND d.event_id = e.id AND d.status = 'pending')
                   ORDER BY event_ts LIMIT $3)",
                &[&account_id, &before, &BATCH],
            )
            .await?;
        Ok(n as usize)
    }

    /// Deletes up to one batch of finished instances that ended before `before`.
    pub async fn delete_finished_instances(&self, before: i64) -> Result<usize, StoreError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "DELETE FROM instances WHERE ctid IN (
                   SELECT ctid FROM instances WHERE status = 'closed' AND end_ts < $1 LIMIT $2)",
                &[&before, &BATCH],
            )
            .await?;
        Ok(n as usize)
    }

    /// Deletes up to one batch of finished deliveries created before `before`, with their
    /// attempts (the delivery log's retention).
    pub async fn delete_old_deliveries(&self, before: i64) -> Result<usize, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let gone = tx
            .query(
                "DELETE FROM deliveries WHERE ctid IN (
                   SELECT ctid FROM deliveries WHERE created_at < $1 AND status <> 'pending'
                   LIMIT $2)
                 RETURNING account_id, delivery_id",
                &[&before, &BATCH],
            )
            .await?;
        let (accounts, ids): (Vec<String>, Vec<String>) = gone
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<Vec<(String, String)>, StoreError>>()?
            .into_iter()
            .unzip();
        tx.execute(
            "DELETE FROM attempts a USING unnest($1::TEXT[], $2::TEXT[]) AS g(account_id, delivery_id)
             WHERE a.account_id = g.account_id AND a.delivery_id = g.delivery_id",
            &[&accounts, &ids],
        )
        .await?;
        tx.commit().await?;
        Ok(ids.len())
    }

    /// Accounts marked deleted whose data may still be stored.
    pub async fn deleted_accounts(&self) -> Result<Vec<String>, StoreError> {
        let c = self.client().await?;
        c.query(
            "SELECT account_id FROM accounts WHERE deleted_at IS NOT NULL",
            &[],
        )
        .await?
        .iter()
        .map(|r| Ok(r.try_get(0)?))
        .collect()
    }

    /// Deletes up to one batch of a deleted account's events and instances.
    pub async fn purge_account_batch(&self, account_id: &str) -> Result<usize, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let mut n = tx
            .execute(
                "DELETE FROM events WHERE seq IN
                   (SELECT seq FROM events WHERE account_id = $1 LIMIT $2)",
                &[&account_id, &BATCH],
            )
            .await?;
        n += tx
            .execute(
                "DELETE FROM instances WHERE ctid IN
                   (SELECT ctid FROM instances WHERE account_id = $1 LIMIT $2)",
                &[&account_id, &BATCH],
            )
            .await?;
        tx.commit().await?;
        Ok(n as usize)
    }

    /// Looks at the oldest batch of raw samples below `keep_from` and deletes those older than
    /// their account's cutoff (accounts absent from `cutoffs` are gone: all their samples go).
    /// Returns how many were deleted; 0 means the head of the log is still within retention.
    pub async fn delete_old_samples(
        &self,
        cutoffs: &HashMap<String, i64>,
        keep_from: i64,
    ) -> Result<usize, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let rows = tx
            .query(
                "SELECT seq, account_id, ts FROM samples WHERE seq < $1 ORDER BY seq LIMIT $2",
                &[&keep_from, &BATCH],
            )
            .await?;
        let mut doomed = Vec::new();
        for r in &rows {
            let (seq, account, ts): (i64, String, i64) =
                (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
            if cutoffs.get(&account).is_none_or(|cut| ts < *cut) {
                doomed.push(seq);
            }
        }
        let n = tx
            .execute("DELETE FROM samples WHERE seq = ANY($1)", &[&doomed])
            .await?;
        tx.commit().await?;
        Ok(n as usize)
    }
}
