//! The aggregation thread's writes (raw samples, meeting instances, events, the replay
//! watermark) and the reads that rebuild its state after a restart.

use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use crate::{InstanceRow, InstanceStatus, NewEvent, SampleRow, StoreError, StoredSample};

/// Everything one group commit writes, in one transaction.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    /// Samples with the sequence numbers the aggregator assigned (ascending, contiguous with
    /// what is stored).
    pub samples: Vec<(i64, SampleRow)>,
    pub instances: Vec<InstanceRow>,
    pub events: Vec<NewEvent>,
    /// Samples below this sequence number are no longer needed to rebuild state.
    pub replay_from: Option<i64>,
}

const REPLAY_KEY: &str = "replay_from_seq";

impl SqliteStore {
    /// Commits a batch durably. Events whose dedup key is already stored are skipped, so a
    /// window is never stored twice; returns how many events were inserted.
    pub fn commit(&self, batch: &WriteBatch) -> Result<usize, StoreError> {
        self.write(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT INTO samples (seq, account_id, received_ms, ts, interval_s, route, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for (seq, s) in &batch.samples {
                    st.execute(params![
                        seq,
                        s.account_id,
                        s.received_ms,
                        s.ts,
                        s.interval_s,
                        s.route,
                        s.body
                    ])?;
                }
                let mut st = tx.prepare_cached(
                    "INSERT INTO instances
                       (account_id, instance_id, kind, series_id, direction, meeting_type, first_seq,
                        status, end_ts, ended_explicitly)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                     ON CONFLICT (account_id, instance_id) DO UPDATE SET
                       status = excluded.status, end_ts = excluded.end_ts,
                       ended_explicitly = excluded.ended_explicitly",
                )?;
                for i in &batch.instances {
                    st.execute(params![
                        i.account_id,
                        i.instance_id,
                        i.kind,
                        i.series_id,
                        i.direction,
                        i.meeting_type,
                        i.first_seq,
                        i.status.as_str(),
                        i.end_ts,
                        i.ended_explicitly
                    ])?;
                }
            }
            let inserted = insert_events(&tx, &batch.events)?;
            if let Some(seq) = batch.replay_from {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    params![REPLAY_KEY, seq.to_string()],
                )?;
            }
            tx.commit()?;
            Ok(inserted)
        })
    }

    /// The next free sample sequence number.
    pub fn next_sample_seq(&self) -> Result<i64, StoreError> {
        self.write(|c| {
            Ok(
                c.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM samples", [], |r| {
                    r.get(0)
                })?,
            )
        })
    }

    /// Where replay starts: samples below are not needed to rebuild aggregation state.
    pub fn replay_from(&self) -> Result<i64, StoreError> {
        let v = self.write(|c| {
            Ok(
                c.query_row("SELECT value FROM meta WHERE key = ?1", [REPLAY_KEY], |r| {
                    r.get::<_, String>(0)
                })
                .optional()?,
            )
        })?;
        Ok(v.and_then(|s| s.parse().ok()).unwrap_or(0))
    }

    /// Stored samples with `seq >= from`, in order, at most `limit`.
    pub fn samples_from(&self, from: i64, limit: usize) -> Result<Vec<StoredSample>, StoreError> {
        self.write(|c| {
            let mut st = c.prepare_cached(
                "SELECT seq, account_id, received_ms, ts, interval_s, route, body FROM samples
                 WHERE seq >= ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = st
                .query_map(params![from, limit as i64], |r| {
                    Ok(StoredSample {
                        seq: r.get(0)?,
                        row: SampleRow {
                            account_id: r.get(1)?,
                            received_ms: r.get(2)?,
                            ts: r.get(3)?,
                            interval_s: r.get(4)?,
                            route: r.get(5)?,
                            body: r.get(6)?,
                        },
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// Instances not finished yet (status open or ended).
    pub fn unfinished_instances(&self) -> Result<Vec<InstanceRow>, StoreError> {
        self.instances_where("status <> 'closed'", i64::MIN)
    }

    /// Finished instances that ended at or after `since`: their ends still route late samples.
    pub fn closed_instances_since(&self, since: i64) -> Result<Vec<InstanceRow>, StoreError> {
        self.instances_where("status = 'closed' AND end_ts >= ?1", since)
    }

    fn instances_where(&self, condition: &str, arg: i64) -> Result<Vec<InstanceRow>, StoreError> {
        let uses_arg = condition.contains("?1");
        self.write(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT account_id, instance_id, kind, series_id, direction, meeting_type, first_seq,
                        status, end_ts, ended_explicitly
                 FROM instances WHERE {condition} ORDER BY first_seq"
            ))?;
            let map = |r: &rusqlite::Row<'_>| {
                let status: String = r.get(7)?;
                Ok(InstanceRow {
                    account_id: r.get(0)?,
                    instance_id: r.get(1)?,
                    kind: r.get(2)?,
                    series_id: r.get(3)?,
                    direction: r.get(4)?,
                    meeting_type: r.get(5)?,
                    first_seq: r.get(6)?,
                    status: InstanceStatus::parse(&status).unwrap_or(InstanceStatus::Open),
                    end_ts: r.get(8)?,
                    ended_explicitly: r.get(9)?,
                })
            };
            let rows = if uses_arg {
                st.query_map([arg], map)?.collect::<Result<Vec<_>, _>>()?
            } else {
                st.query_map([], map)?.collect::<Result<Vec<_>, _>>()?
            };
            Ok(rows)
        })
    }

    /// Which of these dedup keys of an account already have an event.
    pub fn existing_dedup_keys(
        &self,
        account_id: &str,
        keys: &[String],
    ) -> Result<Vec<String>, StoreError> {
        self.write(|c| {
            let mut st =
                c.prepare_cached("SELECT 1 FROM events WHERE account_id = ?1 AND dedup_key = ?2")?;
            let mut found = Vec::new();
            for k in keys {
                if st.exists(params![account_id, k])? {
                    found.push(k.clone());
                }
            }
            Ok(found)
        })
    }
}

fn insert_events(tx: &rusqlite::Transaction<'_>, events: &[NewEvent]) -> Result<usize, StoreError> {
    let mut st = tx.prepare_cached(
        "INSERT INTO events (id, account_id, event_type, event_ts, meeting_id, meeting_instance_id,
                             participant_id, call_id, dedup_key, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (account_id, dedup_key) DO NOTHING",
    )?;
    let mut n = 0;
    for e in events {
        let inserted = st.execute(params![
            e.id,
            e.account_id,
            e.event_type,
            e.event_ts,
            e.meeting_id,
            e.meeting_instance_id,
            e.participant_id,
            e.call_id,
            e.dedup_key,
            e.body
        ])?;
        if inserted == 1 {
            super::webhooks::create_deliveries(
                tx,
                &e.account_id,
                &e.id,
                &e.event_type,
                e.event_ts,
            )?;
        }
        n += inserted;
    }
    Ok(n)
}
