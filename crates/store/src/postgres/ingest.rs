//! The aggregation's writes (raw samples, instances, events with their deliveries, the replay
//! watermark) and the reads that rebuild its state, as in `sqlite/ingest.rs`.

use deadpool_postgres::Transaction;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::PgStore;
use crate::{InstanceRow, InstanceStatus, SampleRow, StoreError, StoredSample, WriteBatch};

pub(super) const REPLAY_KEY: &str = "replay_from_seq";
/// The channel a commit that created deliveries notifies.
pub const DELIVERIES_CHANNEL: &str = "qss_deliveries";
/// The advisory lock held by every transaction that inserts events, from the allocation of
/// their `seq` to the commit, so that `seq` order is commit order (docs/postgres-design.md).
const EVENTS_LOCK: i64 = 0x7173_732d_6576_6e74;

impl PgStore {
    /// Commits a batch durably, in one transaction. Events whose dedup key is already stored
    /// are skipped, so a window is never stored twice; returns how many events were inserted.
    pub async fn commit(&self, batch: &WriteBatch) -> Result<usize, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let inserted = write_batch(&tx, batch).await?;
        tx.commit().await?;
        Ok(inserted)
    }
}

/// Writes a batch in `tx`: samples, instances, events with their deliveries (under the events
/// lock), the watermark. Returns how many events were inserted.
///
/// Set-based: one statement per kind of row, whatever the batch's size (arrays bound with
/// `unnest`), because a statement per row costs a round trip each, and the events lock is held
/// across them (BENCHMARKS.md: 4,000 events/s a row at a time).
pub(super) async fn write_batch(
    tx: &Transaction<'_>,
    batch: &WriteBatch,
) -> Result<usize, StoreError> {
    if !batch.samples.is_empty() {
        let mut seqs = Vec::with_capacity(batch.samples.len());
        let mut accounts = Vec::with_capacity(batch.samples.len());
        let (mut received, mut ts, mut intervals, mut routes, mut bodies) =
            (vec![], vec![], vec![], vec![], vec![]);
        for (seq, s) in &batch.samples {
            seqs.push(*seq);
            accounts.push(s.account_id.as_str());
            received.push(s.received_ms);
            ts.push(s.ts);
            intervals.push(i64::from(s.interval_s));
            routes.push(s.route.as_str());
            bodies.push(s.body.as_str());
        }
        let st = tx
            .prepare_cached(
                "INSERT INTO samples (seq, account_id, received_ms, ts, interval_s, route, body)
                 SELECT * FROM unnest($1::BIGINT[], $2::TEXT[], $3::BIGINT[], $4::BIGINT[],
                                      $5::BIGINT[], $6::TEXT[], $7::TEXT[])",
            )
            .await?;
        tx.execute(
            &st,
            &[
                &seqs, &accounts, &received, &ts, &intervals, &routes, &bodies,
            ],
        )
        .await?;
    }
    if !batch.instances.is_empty() {
        // One row per instance, its last change (a batch may open and end one).
        let mut last: std::collections::HashMap<(&str, &str), &crate::InstanceRow> =
            std::collections::HashMap::new();
        for i in &batch.instances {
            last.insert((i.account_id.as_str(), i.instance_id.as_str()), i);
        }
        let rows: Vec<&crate::InstanceRow> = last.into_values().collect();
        let st = tx
            .prepare_cached(
                "INSERT INTO instances
                   (account_id, instance_id, kind, series_id, direction, meeting_type, first_seq,
                    status, end_ts, ended_explicitly, part)
                 SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
                                      $6::TEXT[], $7::BIGINT[], $8::TEXT[], $9::BIGINT[],
                                      $10::BOOLEAN[], $11::INTEGER[])
                 ON CONFLICT (account_id, instance_id) DO UPDATE SET
                   status = excluded.status, end_ts = excluded.end_ts,
                   ended_explicitly = excluded.ended_explicitly",
            )
            .await?;
        let col = |f: fn(&crate::InstanceRow) -> &str| -> Vec<&str> {
            rows.iter().map(|i| f(i)).collect()
        };
        let directions: Vec<Option<&str>> = rows.iter().map(|i| i.direction.as_deref()).collect();
        let first_seqs: Vec<i64> = rows.iter().map(|i| i.first_seq).collect();
        let statuses: Vec<&str> = rows.iter().map(|i| i.status.as_str()).collect();
        let ends: Vec<Option<i64>> = rows.iter().map(|i| i.end_ts).collect();
        let explicit: Vec<bool> = rows.iter().map(|i| i.ended_explicitly).collect();
        let parts: Vec<i32> = rows
            .iter()
            .map(|i| crate::partition_of(&i.account_id, &i.series_id))
            .collect();
        let params: [&(dyn ToSql + Sync); 11] = [
            &col(|i| &i.account_id),
            &col(|i| &i.instance_id),
            &col(|i| &i.kind),
            &col(|i| &i.series_id),
            &directions,
            &col(|i| &i.meeting_type),
            &first_seqs,
            &statuses,
            &ends,
            &explicit,
            &parts,
        ];
        tx.execute(&st, &params).await?;
    }
    let mut inserted = 0;
    if !batch.events.is_empty() {
        let e = &batch.events;
        let ids: Vec<&str> = e.iter().map(|e| e.id.as_str()).collect();
        let accounts: Vec<&str> = e.iter().map(|e| e.account_id.as_str()).collect();
        let types: Vec<&str> = e.iter().map(|e| e.event_type.as_str()).collect();
        let ts: Vec<i64> = e.iter().map(|e| e.event_ts).collect();
        let meetings: Vec<Option<&str>> = e.iter().map(|e| e.meeting_id.as_deref()).collect();
        let instances: Vec<Option<&str>> =
            e.iter().map(|e| e.meeting_instance_id.as_deref()).collect();
        let participants: Vec<Option<&str>> =
            e.iter().map(|e| e.participant_id.as_deref()).collect();
        let calls: Vec<Option<&str>> = e.iter().map(|e| e.call_id.as_deref()).collect();
        let keys: Vec<&str> = e.iter().map(|e| e.dedup_key.as_str()).collect();
        let bodies: Vec<&str> = e.iter().map(|e| e.body.as_str()).collect();
        let st = tx.prepare_cached(INSERT_EVENTS).await?;
        let params: [&(dyn ToSql + Sync); 10] = [
            &ids,
            &accounts,
            &types,
            &ts,
            &meetings,
            &instances,
            &participants,
            &calls,
            &keys,
            &bodies,
        ];
        // The lock and the insert go out together (pipelined): one round trip.
        // Both statements are prepared before, so that they are sent in this order: a query
        // given as text is parsed first (a round trip), and would run after the insert.
        let lock_st = tx
            .prepare_cached("SELECT pg_advisory_xact_lock($1)")
            .await?;
        let lock = tx.execute(&lock_st, &[&EVENTS_LOCK]);
        let insert = tx.query_one(&st, &params);
        let (_, row) = tokio::try_join!(lock, insert)?;
        let n: i64 = row.try_get(0)?;
        inserted = n as usize;
    }
    if let Some(seq) = batch.replay_from {
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&REPLAY_KEY, &seq.to_string()],
        )
        .await?;
    }
    if inserted > 0 {
        // Idle dispatchers of every node wake at the commit (one notification per
        // transaction: PostgreSQL folds identical ones).
        tx.execute("SELECT pg_notify($1, '')", &[&DELIVERIES_CHANNEL])
            .await?;
    }
    Ok(inserted)
}

impl PgStore {
    /// The next free sample sequence number.
    pub async fn next_sample_seq(&self) -> Result<i64, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_one("SELECT COALESCE(MAX(seq), 0) + 1 FROM samples", &[])
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Where replay starts: samples below are not needed to rebuild aggregation state.
    pub async fn replay_from(&self) -> Result<i64, StoreError> {
        Ok(self
            .get_meta(REPLAY_KEY)
            .await?
            .and_then(|s| s.parse().ok())
            .unwrap_or(0))
    }

    /// Stored samples with `seq >= from`, in order, at most `limit`.
    pub async fn samples_from(
        &self,
        from: i64,
        limit: usize,
    ) -> Result<Vec<StoredSample>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT seq, account_id, received_ms, ts, interval_s, route, body FROM samples
                 WHERE seq >= $1 ORDER BY seq LIMIT $2",
                &[&from, &(limit as i64)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let interval: i64 = r.try_get(4)?;
                Ok(StoredSample {
                    seq: r.try_get(0)?,
                    row: SampleRow {
                        account_id: r.try_get(1)?,
                        received_ms: r.try_get(2)?,
                        ts: r.try_get(3)?,
                        interval_s: u32::try_from(interval)
                            .map_err(|_| StoreError::Corrupt(format!("interval {interval}")))?,
                        route: r.try_get(5)?,
                        body: r.try_get(6)?,
                    },
                })
            })
            .collect()
    }

    /// Instances not finished yet (status open or ended).
    pub async fn unfinished_instances(&self) -> Result<Vec<InstanceRow>, StoreError> {
        self.instances_where("status <> 'closed'", &[]).await
    }

    /// Finished instances that ended at or after `since`: their ends still route late samples.
    pub async fn closed_instances_since(&self, since: i64) -> Result<Vec<InstanceRow>, StoreError> {
        self.instances_where("status = 'closed' AND end_ts >= $1", &[&since])
            .await
    }

    pub(super) async fn instances_where(
        &self,
        condition: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<InstanceRow>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT account_id, instance_id, kind, series_id, direction, meeting_type,
                            first_seq, status, end_ts, ended_explicitly
                     FROM instances WHERE {condition} ORDER BY first_seq"
                ),
                params,
            )
            .await?;
        rows.iter().map(instance_from_row).collect()
    }

    /// Which of these dedup keys of an account already have an event.
    pub async fn existing_dedup_keys(
        &self,
        account_id: &str,
        keys: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT dedup_key FROM events WHERE account_id = $1 AND dedup_key = ANY($2)",
                &[&account_id, &keys],
            )
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }
}

/// The events of a batch (those whose dedup key is new, each with a `seq` allocated under the
/// events lock) and, in the same statement, one pending delivery per subscription active now
/// whose events include the event's type (the outbox). Delivery ids start with the creation
/// time, as in SQLite, then 80 random bits. Returns how many events were inserted.
const INSERT_EVENTS: &str = "
    WITH new_events AS (
        INSERT INTO events (seq, id, account_id, event_type, event_ts, meeting_id,
                            meeting_instance_id, participant_id, call_id, dedup_key, body)
        SELECT nextval('events_seq'), u.id, u.a, u.t, u.ts, u.m, u.mi, u.p, u.c, u.k, u.b
        FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::TEXT[], $6::TEXT[],
                    $7::TEXT[], $8::TEXT[], $9::TEXT[], $10::TEXT[])
             WITH ORDINALITY AS u(id, a, t, ts, m, mi, p, c, k, b, n)
        ORDER BY u.n
        ON CONFLICT (account_id, dedup_key) DO NOTHING
        RETURNING account_id, id, event_type, event_ts
    ), new_deliveries AS (
        INSERT INTO deliveries (account_id, delivery_id, webhook_id, event_id, event_type,
                                status, next_attempt_at, created_at)
        SELECT w.account_id,
               'dlv_' || lpad(to_hex(e.event_ts), 12, '0')
                      || substr(replace(gen_random_uuid()::TEXT, '-', ''), 1, 20),
               w.webhook_id, e.id, e.event_type, 'pending', e.event_ts, e.event_ts
        FROM new_events e
        JOIN webhooks w ON w.account_id = e.account_id AND w.status = 'active'
        WHERE e.event_type IN (SELECT json_array_elements_text(w.events::JSON))
    )
    SELECT count(*) FROM new_events";

fn instance_from_row(r: &Row) -> Result<InstanceRow, StoreError> {
    let status: String = r.try_get(7)?;
    Ok(InstanceRow {
        account_id: r.try_get(0)?,
        instance_id: r.try_get(1)?,
        kind: r.try_get(2)?,
        series_id: r.try_get(3)?,
        direction: r.try_get(4)?,
        meeting_type: r.try_get(5)?,
        first_seq: r.try_get(6)?,
        status: InstanceStatus::parse(&status).unwrap_or(InstanceStatus::Open),
        end_ts: r.try_get(8)?,
        ended_explicitly: r.try_get(9)?,
    })
}
