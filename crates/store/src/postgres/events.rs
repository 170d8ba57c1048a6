//! Reading events for the API: keyset pages in `(event_ts, id)` order over a snapshot, as in
//! `sqlite/events.rs`.

use tokio_postgres::types::ToSql;

use super::PgStore;
use crate::{EventQuery, EventRow, StoreError};

impl PgStore {
    /// The highest commit sequence of the events table: a page snapshot.
    pub async fn max_event_seq(&self) -> Result<i64, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_one("SELECT COALESCE(MAX(seq), 0)::BIGINT FROM events", &[])
            .await?;
        Ok(row.try_get(0)?)
    }

    /// One page: up to `q.limit` events matching `q`.
    pub async fn list_events(&self, q: &EventQuery) -> Result<Vec<EventRow>, StoreError> {
        let mut sql = String::from(
            "SELECT seq, id, event_ts, body FROM events
             WHERE account_id = $1 AND event_ts >= $2 AND event_ts < $3",
        );
        let limit = q.limit as i64;
        let mut args: Vec<&(dyn ToSql + Sync)> = vec![&q.account_id, &q.from, &q.to];
        // Placeholders are numbered in the order arguments are pushed.
        if let Some((ts, id)) = &q.after {
            let n = args.len();
            sql.push_str(&format!(
                " AND (event_ts > ${} OR (event_ts = ${} AND id > ${}))",
                n + 1,
                n + 1,
                n + 2
            ));
            args.push(ts);
            args.push(id);
        }
        if let Some(max) = &q.max_seq {
            sql.push_str(&format!(" AND seq <= ${}", args.len() + 1));
            args.push(max);
        }
        if !q.event_types.is_empty() {
            sql.push_str(&format!(" AND event_type = ANY(${})", args.len() + 1));
            args.push(&q.event_types);
        }
        for (col, v) in [
            ("meeting_id", &q.meeting_id),
            ("meeting_instance_id", &q.meeting_instance_id),
            ("participant_id", &q.participant_id),
            ("call_id", &q.call_id),
        ] {
            if let Some(v) = v {
                sql.push_str(&format!(" AND {col} = ${}", args.len() + 1));
                args.push(v);
            }
        }
        sql.push_str(&format!(" ORDER BY event_ts, id LIMIT ${}", args.len() + 1));
        args.push(&limit);
        let c = self.client().await?;
        let st = c.prepare_cached(&sql).await?;
        let rows = c.query(&st, &args).await?;
        rows.iter()
            .map(|r| {
                Ok(EventRow {
                    seq: r.try_get(0)?,
                    id: r.try_get(1)?,
                    event_ts: r.try_get(2)?,
                    body: r.try_get(3)?,
                })
            })
            .collect()
    }
}
