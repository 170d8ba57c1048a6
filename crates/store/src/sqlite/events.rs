//! Reading events for the API: keyset pages in `(event_ts, id)` order over a snapshot.

use rusqlite::types::Value;

use super::SqliteStore;
use crate::{EventQuery, EventRow, StoreError};

impl SqliteStore {
    /// The highest commit sequence of the events table: a page snapshot.
    pub fn max_event_seq(&self) -> Result<i64, StoreError> {
        self.read(
            |c| Ok(c.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))?),
        )
    }

    /// One page: up to `q.limit` events matching `q`.
    pub fn list_events(&self, q: &EventQuery) -> Result<Vec<EventRow>, StoreError> {
        let mut sql = String::from(
            "SELECT seq, id, event_ts, body FROM events WHERE account_id = ? AND event_ts >= ? AND event_ts < ?",
        );
        let mut args: Vec<Value> = vec![
            Value::Text(q.account_id.clone()),
            Value::Integer(q.from),
            Value::Integer(q.to),
        ];
        if let Some((ts, id)) = &q.after {
            sql.push_str(" AND (event_ts > ? OR (event_ts = ? AND id > ?))");
            args.extend([
                Value::Integer(*ts),
                Value::Integer(*ts),
                Value::Text(id.clone()),
            ]);
        }
        if let Some(max) = q.max_seq {
            sql.push_str(" AND seq <= ?");
            args.push(Value::Integer(max));
        }
        if !q.event_types.is_empty() {
            sql.push_str(" AND event_type IN (");
            sql.push_str(&vec!["?"; q.event_types.len()].join(","));
            sql.push(')');
            args.extend(q.event_types.iter().map(|t| Value::Text(t.clone())));
        }
        for (col, v) in [
            ("meeting_id", &q.meeting_id),
            ("meeting_instance_id", &q.meeting_instance_id),
            ("participant_id", &q.participant_id),
            ("call_id", &q.call_id),
        ] {
            if let Some(v) = v {
                sql.push_str(&format!(" AND {col} = ?"));
                args.push(Value::Text(v.clone()));
            }
        }
        sql.push_str(" ORDER BY event_ts, id LIMIT ?");
        args.push(Value::Integer(q.limit as i64));
        self.read(|c| {
            let mut st = c.prepare_cached(&sql)?;
            let rows = st
                .query_map(rusqlite::params_from_iter(args), |r| {
                    Ok(EventRow {
                        seq: r.get(0)?,
                        id: r.get(1)?,
                        event_ts: r.get(2)?,
                        body: r.get(3)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }
}
