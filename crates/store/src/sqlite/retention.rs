//! Retention (SPEC 10) and the purge of deleted accounts, in batches of at most 5,000 rows so
//! that no statement holds the write lock for long (hook0#47: an unbounded DELETE starved
//! everything else for an hour).

use std::collections::HashMap;

use rusqlite::params;

use super::SqliteStore;
use crate::{RETENTION_BATCH, StoreError};

impl SqliteStore {
    /// Deletes up to one batch of an account's events older than `before`, except those with a
    /// pending delivery; returns how many.
    pub fn delete_old_events(&self, account_id: &str, before: i64) -> Result<usize, StoreError> {
        self.write(|c| {
            Ok(c.execute(
                "DELETE FROM events WHERE seq IN (
                   SELECT seq FROM events e WHERE account_id = ?1 AND event_ts < ?2
                     AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.account_id = e.account_id
                                     AND d.event_id = e.id AND d.status = 'pending')
                   ORDER BY event_ts LIMIT ?3)",
                params![account_id, before, RETENTION_BATCH as i64],
            )?)
        })
    }

    /// Deletes up to one batch of finished instances that ended before `before` (their ends
    /// no longer route any sample that could be accepted).
    pub fn delete_finished_instances(&self, before: i64) -> Result<usize, StoreError> {
        self.write(|c| {
            Ok(c.execute(
                "DELETE FROM instances WHERE rowid IN (
                   SELECT rowid FROM instances WHERE status = 'closed' AND end_ts < ?1 LIMIT ?2)",
                params![before, RETENTION_BATCH as i64],
            )?)
        })
    }

    /// Deletes up to one batch of finished deliveries created before `before`, with their
    /// attempts (the delivery log's retention, `webhook.delivery_log_days`).
    pub fn delete_old_deliveries(&self, before: i64) -> Result<usize, StoreError> {
        self.write(|c| {
            let tx = c.transaction()?;
            let ids: Vec<(String, String)> = {
                let mut st = tx.prepare_cached(
                    "SELECT account_id, delivery_id FROM deliveries
                     WHERE created_at < ?1 AND status <> 'pending' LIMIT ?2",
                )?;
                st.query_map(params![before, RETENTION_BATCH as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect::<Result<_, _>>()?
            };
            {
                let mut del_attempts = tx.prepare_cached(
                    "DELETE FROM attempts WHERE account_id = ?1 AND delivery_id = ?2",
                )?;
                let mut del = tx.prepare_cached(
                    "DELETE FROM deliveries WHERE account_id = ?1 AND delivery_id = ?2",
                )?;
                for (a, d) in &ids {
                    del_attempts.execute(params![a, d])?;
                    del.execute(params![a, d])?;
                }
            }
            tx.commit()?;
            Ok(ids.len())
        })
    }

    /// Accounts marked deleted whose data may still be stored.
    pub fn deleted_accounts(&self) -> Result<Vec<String>, StoreError> {
        self.read(|c| {
            let mut st =
                c.prepare_cached("SELECT account_id FROM accounts WHERE deleted_at IS NOT NULL")?;
            let rows = st
                .query_map([], |r| r.get(0))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// Deletes up to one batch of a deleted account's events and instances.
    pub fn purge_account_batch(&self, account_id: &str) -> Result<usize, StoreError> {
        self.write(|c| {
            let tx = c.transaction()?;
            let mut n = tx.execute(
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE account_id = ?1 LIMIT ?2)",
                params![account_id, RETENTION_BATCH as i64],
            )?;
            n += tx.execute(
                "DELETE FROM instances WHERE rowid IN
                   (SELECT rowid FROM instances WHERE account_id = ?1 LIMIT ?2)",
                params![account_id, RETENTION_BATCH as i64],
            )?;
            tx.commit()?;
            Ok(n)
        })
    }

    /// Looks at the oldest batch of raw samples below `keep_from` (the replay watermark: the
    /// samples of open windows and instances are above it) and deletes those older than their
    /// account's cutoff (`cutoffs`; accounts absent from it are gone: all their samples go).
    /// Returns how many were deleted; 0 means the head of the log is still within retention.
    pub fn delete_old_samples(
        &self,
        cutoffs: &HashMap<String, i64>,
        keep_from: i64,
    ) -> Result<usize, StoreError> {
        self.write(|c| {
            let tx = c.transaction()?;
            let rows: Vec<(i64, String, i64)> = {
                let mut st = tx.prepare_cached(
                    "SELECT seq, account_id, ts FROM samples WHERE seq < ?1 ORDER BY seq LIMIT ?2",
                )?;
                st.query_map(params![keep_from, RETENTION_BATCH as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<Result<_, _>>()?
            };
            let mut n = 0;
            {
                let mut del = tx.prepare_cached("DELETE FROM samples WHERE seq = ?1")?;
                for (seq, account, ts) in rows {
                    if cutoffs.get(&account).is_none_or(|cut| ts < *cut) {
                        n += del.execute([seq])?;
                    }
                }
            }
            tx.commit()?;
            Ok(n)
        })
    }
}
