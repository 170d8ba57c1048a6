//! What several nodes on one database coordinate through (docs/postgres-design.md): the
//! shared sample log that any node appends to, the aggregation partitions leased to one node
//! at a time with fenced commits, and the live nodes.

use tokio_postgres::types::ToSql;

use super::PgStore;
use super::ingest::write_batch;
use crate::{InstanceRow, StoreError, WriteBatch};

/// Held by every transaction that appends samples, from the allocation of their `seq` to the
/// commit, so that `seq` order is commit order: a reader that has seen `seq` n has seen every
/// sample below it.
const SAMPLES_LOCK: i64 = 0x7173_732d_736d_706c;
/// The channel an append notifies, so that partition owners read at once.
pub const SAMPLES_CHANNEL: &str = "qss_samples";
/// Notified (by a trigger) at the commit of any change to accounts.
pub const ACCOUNTS_CHANNEL: &str = "qss_accounts";
/// Notified (by a trigger) at the commit of any change to webhook subscriptions.
pub const WEBHOOKS_CHANNEL: &str = "qss_webhooks";
/// The database's clock in epoch milliseconds: leases are compared on one clock, whatever the
/// nodes' clocks say.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::BIGINT";

/// The stored form of an idempotency key: the first 16 bytes of its SHA-256.
fn key_hash(key: &str) -> [u8; 16] {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// A sample to append: validated, with its partition and idempotency key.
#[derive(Debug, Clone)]
pub struct NewSample {
    pub account_id: String,
    pub part: i32,
    pub skey: String,
    pub received_ms: i64,
    pub ts: i64,
    pub interval_s: u32,
    pub body: String,
}

/// A sample read back for its partition's owner.
#[derive(Debug, Clone)]
pub struct PartSample {
    pub seq: i64,
    pub part: i32,
    pub account_id: String,
    pub received_ms: i64,
    pub interval_s: u32,
    pub body: String,
}

/// A partition held by this node: commits carry `token`, rebuilding starts at `replay_from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub part: i32,
    pub token: i64,
    pub replay_from: i64,
}

impl PgStore {
    /// Appends samples in one durable transaction; returns, per sample, whether it was stored
    /// (false: its key was already stored, or repeated earlier in `samples`).
    pub async fn append_samples(&self, samples: &[NewSample]) -> Result<Vec<bool>, StoreError> {
        let mut fresh = vec![false; samples.len()];
        let mut seen = std::collections::HashSet::with_capacity(samples.len());
        let (mut accounts, mut parts, mut keys, mut received, mut ts, mut intervals, mut bodies) =
            (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        let mut index = Vec::new();
        for (i, s) in samples.iter().enumerate() {
            let key = key_hash(&s.skey);
            if !seen.insert((s.account_id.as_str(), key)) {
                continue;
            }
            index.push((i, key));
            accounts.push(s.account_id.as_str());
            parts.push(s.part);
            keys.push(key.to_vec());
            received.push(s.received_ms);
            ts.push(s.ts);
            intervals.push(i64::from(s.interval_s));
            bodies.push(s.body.as_str());
        }
        if index.is_empty() {
            return Ok(fresh);
        }
        let mut c = self.client().await?;
        let st = c
            .prepare_cached(
                "WITH stored AS (
                     INSERT INTO samples (seq, account_id, part, skey, received_ms, ts,
                                          interval_s, route, body)
                     SELECT nextval('samples_seq'), a, p, k, r, t, i, '', b
                     FROM unnest($1::TEXT[], $2::INTEGER[], $3::BYTEA[], $4::BIGINT[],
                                 $5::BIGINT[], $6::BIGINT[], $7::TEXT[])
                          WITH ORDINALITY AS u(a, p, k, r, t, i, b, n)
                     ORDER BY n
                     ON CONFLICT (account_id, skey) DO NOTHING
                     RETURNING account_id, skey
                 )
                 SELECT s.account_id, s.skey
                 FROM stored s,
                      (SELECT pg_notify($8, '') WHERE EXISTS (SELECT 1 FROM stored)) AS notified",
            )
            .await?;
        let tx = c.transaction().await?;
        let params: [&(dyn ToSql + Sync); 8] = [
            &accounts,
            &parts,
            &keys,
            &received,
            &ts,
            &intervals,
            &bodies,
            &SAMPLES_CHANNEL,
        ];
        // The lock and the insert (with its notification) go out together (pipelined): the
        // lock is held for two round trips (this and the commit) rather than four.
        // Both statements are prepared before, so that they are sent in this order: a query
        // given as text is parsed first (a round trip), and would run after the insert.
        let lock_st = tx
            .prepare_cached("SELECT pg_advisory_xact_lock($1)")
            .await?;
        let lock = tx.execute(&lock_st, &[&SAMPLES_LOCK]);
        let insert = tx.query(&st, &params);
        let (_, rows) = tokio::try_join!(lock, insert)?;
        tx.commit().await?;
        // Usually every sample was new: no lookups then.
        if rows.len() == index.len() {
            for (i, _) in index {
                fresh[i] = true;
            }
            return Ok(fresh);
        }
        let mut stored = std::collections::HashSet::with_capacity(rows.len());
        for r in &rows {
            let account: String = r.try_get(0)?;
            let key: &[u8] = r.try_get(1)?;
            stored.insert((account, key.to_vec()));
        }
        for (i, key) in index {
            let s = &samples[i];
            fresh[i] = stored.contains(&(s.account_id.clone(), key.to_vec()));
        }
        Ok(fresh)
    }

    /// The lowest watermark of any partition (and of the single-writer watermark, when one
    /// was written): samples from there on may still be needed.
    pub async fn samples_needed_from(&self) -> Result<i64, StoreError> {
        let partitions: i64 = {
            let c = self.client().await?;
            c.query_one("SELECT COALESCE(MIN(replay_from), 0) FROM partitions", &[])
                .await?
                .try_get(0)?
        };
        let single = match self.get_meta(super::ingest::REPLAY_KEY).await? {
            Some(v) => v.parse().unwrap_or(0),
            None => i64::MAX,
        };
        Ok(partitions.min(single))
    }

    /// The highest sample `seq` committed: every sample at or below it is visible.
    pub async fn last_sample_seq(&self) -> Result<i64, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_one("SELECT COALESCE(MAX(seq), 0) FROM samples", &[])
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Samples of these partitions with `seq` in `(after, upto]`, in order, at most `limit`.
    pub async fn part_samples(
        &self,
        parts: &[i32],
        after: i64,
        upto: i64,
        limit: usize,
    ) -> Result<Vec<PartSample>, StoreError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT seq, part, account_id, received_ms, interval_s, body FROM samples
                 WHERE seq > $1 AND seq <= $2 AND part = ANY($3) ORDER BY seq LIMIT $4",
            )
            .await?;
        let rows = c
            .query(&st, &[&after, &upto, &parts, &(limit as i64)])
            .await?;
        rows.iter()
            .map(|r| {
                let interval: i64 = r.try_get(4)?;
                Ok(PartSample {
                    seq: r.try_get(0)?,
                    part: r.try_get(1)?,
                    account_id: r.try_get(2)?,
                    received_ms: r.try_get(3)?,
                    interval_s: u32::try_from(interval)
                        .map_err(|_| StoreError::Corrupt(format!("interval {interval}")))?,
                    body: r.try_get(5)?,
                })
            })
            .collect()
    }

    /// Unfinished instances of these partitions.
    pub async fn part_unfinished_instances(
        &self,
        parts: &[i32],
    ) -> Result<Vec<InstanceRow>, StoreError> {
        self.instances_where(
            "part = ANY($1) AND status <> 'closed'",
            &[&parts as &(dyn ToSql + Sync)],
        )
        .await
    }

    /// Finished instances of these partitions that ended at or after `since`.
    pub async fn part_closed_instances_since(
        &self,
        parts: &[i32],
        since: i64,
    ) -> Result<Vec<InstanceRow>, StoreError> {
        self.instances_where(
            "part = ANY($1) AND status = 'closed' AND end_ts >= $2",
            &[&parts as &(dyn ToSql + Sync), &since],
        )
        .await
    }

    /// Says this node is alive for `ttl_ms` more; returns how many nodes are alive.
    pub async fn heartbeat(&self, node: &str, ttl_ms: i64) -> Result<i64, StoreError> {
        let c = self.client().await?;
        c.execute(
            &format!(
                "INSERT INTO nodes (node_id, seen_until) VALUES ($1, {NOW_MS} + $2)
                 ON CONFLICT (node_id) DO UPDATE SET seen_until = excluded.seen_until"
            ),
            &[&node, &ttl_ms],
        )
        .await?;
        c.execute(
            &format!("DELETE FROM nodes WHERE seen_until < {NOW_MS} - 3600000"),
            &[],
        )
        .await?;
        let row = c
            .query_one(
                &format!("SELECT count(*) FROM nodes WHERE seen_until >= {NOW_MS}"),
                &[],
            )
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Takes the node off the live list (a clean stop).
    pub async fn leave(&self, node: &str) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute("DELETE FROM nodes WHERE node_id = $1", &[&node])
            .await?;
        Ok(())
    }

    /// Claims at most `n` partitions that nobody holds (free, or their lease ran out), each
    /// with a new fencing token.
    pub async fn claim_partitions(
        &self,
        node: &str,
        n: usize,
        lease_ms: i64,
    ) -> Result<Vec<Lease>, StoreError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "UPDATE partitions SET owner = $1, lease_until = {NOW_MS} + $2,
                            lease_token = nextval('lease_tokens')
                     WHERE part IN (SELECT part FROM partitions WHERE lease_until < {NOW_MS}
                                    ORDER BY part LIMIT $3 FOR UPDATE SKIP LOCKED)
                     RETURNING part, lease_token, replay_from"
                ),
                &[&node, &lease_ms, &(n as i64)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Lease {
                    part: r.try_get(0)?,
                    token: r.try_get(1)?,
                    replay_from: r.try_get(2)?,
                })
            })
            .collect()
    }

    /// Extends the leases still held (same token); returns their partitions.
    pub async fn renew_leases(
        &self,
        leases: &[(i32, i64)],
        lease_ms: i64,
    ) -> Result<Vec<i32>, StoreError> {
        let (parts, tokens): (Vec<i32>, Vec<i64>) = leases.iter().copied().unzip();
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "UPDATE partitions p SET lease_until = {NOW_MS} + $3
                     FROM unnest($1::INTEGER[], $2::BIGINT[]) AS f(part, token)
                     WHERE p.part = f.part AND p.lease_token = f.token
                     RETURNING p.part"
                ),
                &[&parts, &tokens, &lease_ms],
            )
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// Gives leases up at once (a clean stop, or a node with more than its share).
    pub async fn release_partitions(&self, leases: &[(i32, i64)]) -> Result<(), StoreError> {
        let (parts, tokens): (Vec<i32>, Vec<i64>) = leases.iter().copied().unzip();
        let c = self.client().await?;
        c.execute(
            "UPDATE partitions p SET owner = NULL, lease_until = 0
             FROM unnest($1::INTEGER[], $2::BIGINT[]) AS f(part, token)
             WHERE p.part = f.part AND p.lease_token = f.token",
            &[&parts, &tokens],
        )
        .await?;
        Ok(())
    }

    /// Commits `batch` only if every lease in `fence` is still held (same token), moving
    /// each partition's replay watermark where one is given. `Ok(None)`: a lease was lost
    /// and nothing was written. The fence's row locks make a concurrent claim wait for this
    /// commit, so a partition's new owner reads everything its old owner committed.
    pub async fn commit_fenced(
        &self,
        batch: &WriteBatch,
        fence: &[(i32, i64, Option<i64>)],
    ) -> Result<Option<usize>, StoreError> {
        let mut parts = Vec::with_capacity(fence.len());
        let mut tokens = Vec::with_capacity(fence.len());
        let mut marks = Vec::with_capacity(fence.len());
        for &(p, t, m) in fence {
            parts.push(p);
            tokens.push(t);
            marks.push(m);
        }
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let held = tx
            .query(
                "UPDATE partitions p SET replay_from = COALESCE(f.mark, p.replay_from)
                 FROM unnest($1::INTEGER[], $2::BIGINT[], $3::BIGINT[]) AS f(part, token, mark)
                 WHERE p.part = f.part AND p.lease_token = f.token
                 RETURNING p.part",
                &[&parts, &tokens, &marks],
            )
            .await?;
        if held.len() < fence.len() {
            tx.rollback().await?;
            return Ok(None);
        }
        let inserted = write_batch(&tx, batch).await?;
        tx.commit().await?;
        Ok(Some(inserted))
    }
}
