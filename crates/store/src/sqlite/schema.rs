//! Versioned, forward-only migrations. Each step runs once, in a transaction, and records its
//! version in `PRAGMA user_version`.

use rusqlite::Connection;

use crate::StoreError;

const MIGRATIONS: &[&str] = &[
    // 1: accounts, credentials, tokens, samples, instances, events, meta.
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE accounts (
        account_id TEXT PRIMARY KEY,
        name       TEXT NOT NULL,
        plan       TEXT NOT NULL,
        qss_addon  INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        settings   TEXT NOT NULL,
        deleted_at INTEGER
    );
    CREATE TABLE credentials (
        account_id  TEXT NOT NULL,
        client_id   TEXT NOT NULL,
        secret_hash BLOB NOT NULL,
        scopes      TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        revoked_at  INTEGER,
        PRIMARY KEY (account_id, client_id)
    );
    CREATE UNIQUE INDEX credentials_by_client ON credentials (client_id);
    CREATE TABLE ingest_keys (
        account_id   TEXT NOT NULL,
        key_id       TEXT NOT NULL,
        secret_hash  BLOB NOT NULL,
        created_at   INTEGER NOT NULL,
        last_used_at INTEGER,
        revoked_at   INTEGER,
        PRIMARY KEY (account_id, key_id)
    );
    CREATE UNIQUE INDEX ingest_keys_by_id ON ingest_keys (key_id);
    CREATE TABLE tokens (
        token_hash BLOB PRIMARY KEY,
        account_id TEXT NOT NULL,
        client_id  TEXT NOT NULL,
        scopes     TEXT NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE INDEX tokens_by_expiry ON tokens (expires_at);
    -- Raw samples, appended in arrival order; deliberately no secondary index.
    CREATE TABLE samples (
        seq         INTEGER PRIMARY KEY,
        account_id  TEXT NOT NULL,
        received_ms INTEGER NOT NULL,
        ts          INTEGER NOT NULL,
        interval_s  INTEGER NOT NULL,
        route       TEXT NOT NULL,
        body        TEXT NOT NULL
    );
    -- Meeting instances and call generations ("series instances"): open, ended (summary
    -- pending) or closed. Recovery restores the unfinished ones and the latest closed end.
    CREATE TABLE instances (
        account_id       TEXT NOT NULL,
        instance_id      TEXT NOT NULL,
        kind             TEXT NOT NULL,
        series_id        TEXT NOT NULL,
        direction        TEXT,
        meeting_type     TEXT NOT NULL,
        first_seq        INTEGER NOT NULL,
        status           TEXT NOT NULL,
        end_ts           INTEGER,
        ended_explicitly INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (account_id, instance_id)
    );
    CREATE INDEX instances_unfinished ON instances (status) WHERE status <> 'closed';
    CREATE INDEX instances_closed_by_end ON instances (end_ts) WHERE status = 'closed';
    -- seq is the commit order, which pagination snapshots use.
    CREATE TABLE events (
        seq                 INTEGER PRIMARY KEY,
        id                  TEXT NOT NULL,
        account_id          TEXT NOT NULL,
        event_type          TEXT NOT NULL,
        event_ts            INTEGER NOT NULL,
        meeting_id          TEXT,
        meeting_instance_id TEXT,
        participant_id      TEXT,
        call_id             TEXT,
        dedup_key           TEXT NOT NULL,
        body                TEXT NOT NULL
    );
    CREATE UNIQUE INDEX events_by_dedup ON events (account_id, dedup_key);
    CREATE UNIQUE INDEX events_by_time ON events (account_id, event_ts, id);
    CREATE INDEX events_by_instance ON events (account_id, meeting_instance_id, event_ts)
        WHERE meeting_instance_id IS NOT NULL;
    "#,
    // 2: webhook subscriptions, deliveries (the outbox) and their attempts.
    r#"
    CREATE TABLE webhooks (
        account_id            TEXT NOT NULL,
        webhook_id            TEXT NOT NULL,
        url                   TEXT NOT NULL,
        events                TEXT NOT NULL,
        -- Signing needs the secret itself (an HMAC key), so it cannot be stored hashed.
        secret                TEXT NOT NULL,
        previous_secret       TEXT,
        previous_secret_until INTEGER,
        status                TEXT NOT NULL,
        description           TEXT,
        max_age_seconds       INTEGER,
        created_at            INTEGER NOT NULL,
        validated_at          INTEGER,
        next_validation_at    INTEGER,
        validation_failures   INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (account_id, webhook_id)
    );
    CREATE TABLE deliveries (
        account_id       TEXT NOT NULL,
        delivery_id      TEXT NOT NULL,
        webhook_id       TEXT NOT NULL,
        event_id         TEXT NOT NULL,
        event_type       TEXT NOT NULL,
        status           TEXT NOT NULL,
        attempt_count    INTEGER NOT NULL DEFAULT 0,
        next_attempt_at  INTEGER,
        -- Automatic retries after a failed attempt (off for a manual retry of a finished one).
        auto_retry       INTEGER NOT NULL DEFAULT 1,
        lease_until      INTEGER,
        lease_token      INTEGER,
        created_at       INTEGER NOT NULL,
        last_attempt_at  INTEGER,
        last_http_status INTEGER,
        last_error       TEXT,
        last_duration_ms INTEGER,
        PRIMARY KEY (account_id, delivery_id)
    );
    CREATE INDEX deliveries_due ON deliveries (webhook_id, next_attempt_at) WHERE status = 'pending';
    CREATE INDEX deliveries_by_webhook ON deliveries (account_id, webhook_id, created_at, delivery_id);
    CREATE INDEX deliveries_by_event ON deliveries (account_id, event_id);
    CREATE UNIQUE INDEX events_by_id ON events (account_id, id);
    CREATE TABLE attempts (
        account_id    TEXT NOT NULL,
        delivery_id   TEXT NOT NULL,
        n             INTEGER NOT NULL,
        at            INTEGER NOT NULL,
        http_status   INTEGER,
        error         TEXT,
        duration_ms   INTEGER NOT NULL,
        response_body TEXT NOT NULL,
        PRIMARY KEY (account_id, delivery_id, n)
    );
    "#,
];

pub fn migrate(c: &Connection) -> Result<(), StoreError> {
    // The version is read inside the write transaction, so processes that start at once on
    // the same file (a server and `qss admin`) apply each step exactly once.
    c.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| {
        let current: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate() {
            let version = i as i64 + 1;
            if version > current {
                c.execute_batch(sql)?;
                c.execute_batch(&format!("PRAGMA user_version = {version}"))?;
            }
        }
        Ok::<_, rusqlite::Error>(())
    })();
    match result {
        Ok(()) => Ok(c.execute_batch("COMMIT")?),
        Err(e) => {
            let _ = c.execute_batch("ROLLBACK");
            Err(e.into())
        }
    }
}
