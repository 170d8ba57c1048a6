//! The aggregation's writes (raw samples, instances, events with their deliveries, the replay
//! watermark) and the reads that rebuild its state, as in `sqlite/ingest.rs`.

use deadpool_postgres::Transaction;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::PgStore;
use crate::{InstanceRow, InstanceStatus, SampleRow, StoreError, StoredSample, WriteBatch};

const REPLAY_KEY: &str = "replay_from_seq";
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
pub(super) async fn write_batch(
    tx: &Transaction<'_>,
    batch: &WriteBatch,
) -> Result<usize, StoreError> {
    if !batch.samples.is_empty() {
        let st = tx
            .prepare_cached(
                "INSERT INTO samples (seq, account_id, received_ms, ts, interval_s, route, body)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .await?;
        for (seq, s) in &batch.samples {
            let interval = i64::from(s.interval_s);
            tx.execute(
                &st,
                &[
                    seq,
                    &s.account_id,
                    &s.received_ms,
                    &s.ts,
                    &interval,
                    &s.route,
                    &s.body,
                ],
            )
            .await?;
        }
    }
    if !batch.instances.is_empty() {
        let st = tx
                .prepare_cached(
                    "INSERT INTO instances
                       (account_id, instance_id, kind, series_id, direction, meeting_type, first_seq,
                        status, end_ts, ended_explicitly, part)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                     ON CONFLICT (account_id, instance_id) DO UPDATE SET
                       status = excluded.status, end_ts = excluded.end_ts,
                       ended_explicitly = excluded.ended_explicitly",
                )
                .await?;
        for i in &batch.instances {
            let part = crate::partition_of(&i.account_id, &i.series_id);
            tx.execute(
                &st,
                &[
                    &i.account_id,
                    &i.instance_id,
                    &i.kind,
                    &i.series_id,
                    &i.direction,
                    &i.meeting_type,
                    &i.first_seq,
                    &i.status.as_str(),
                    &i.end_ts,
                    &i.ended_explicitly,
                    &part,
                ],
            )
            .await?;
        }
    }
    let mut inserted = 0;
    if !batch.events.is_empty() {
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&EVENTS_LOCK])
            .await?;
        let insert = tx
                .prepare_cached(
                    "INSERT INTO events (seq, id, account_id, event_type, event_ts, meeting_id,
                                         meeting_instance_id, participant_id, call_id, dedup_key, body)
                     VALUES (nextval('events_seq'), $1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                     ON CONFLICT (account_id, dedup_key) DO NOTHING
                     RETURNING seq",
                )
                .await?;
        let deliveries = tx.prepare_cached(CREATE_DELIVERIES).await?;
        for e in &batch.events {
            let params: [&(dyn ToSql + Sync); 10] = [
                &e.id,
                &e.account_id,
                &e.event_type,
                &e.event_ts,
                &e.meeting_id,
                &e.meeting_instance_id,
                &e.participant_id,
                &e.call_id,
                &e.dedup_key,
                &e.body,
            ];
            if tx.query_opt(&insert, &params).await?.is_some() {
                inserted += 1;
                tx.execute(
                    &deliveries,
                    &[&e.account_id, &e.id, &e.event_type, &e.event_ts],
                )
                .await?;
            }
        }
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

/// One pending delivery per subscription active now whose events include the event's type, in
/// the transaction that inserts the event (the outbox). Ids start with the creation time, as
/// in SQLite, then 80 random bits.
const CREATE_DELIVERIES: &str = "
    INSERT INTO deliveries (account_id, delivery_id, webhook_id, event_id, event_type, status,
                            next_attempt_at, created_at)
    SELECT account_id,
           'dlv_' || lpad(to_hex($4::BIGINT), 12, '0')
                  || substr(replace(gen_random_uuid()::TEXT, '-', ''), 1, 20),
           webhook_id, $2, $3, 'pending', $4, $4
    FROM webhooks
    WHERE account_id = $1 AND status = 'active'
      AND $3 IN (SELECT json_array_elements_text(events::JSON))";

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
