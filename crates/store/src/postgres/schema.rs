//! Versioned, forward-only migrations for PostgreSQL, the same tables as the SQLite schema.
//!
//! Several nodes may start at once on an empty database. Each step runs in its own transaction
//! that first takes a transaction-scoped advisory lock, then checks `schema_migrations`: the
//! first node applies the step, the others wait for its commit and find it done. The
//! bookkeeping table itself is created under the same lock, since concurrent
//! `CREATE TABLE IF NOT EXISTS` can fail on PostgreSQL's catalog unique indexes.
//!
//! Identifier and key columns use the "C" collation: they compare and sort byte by byte, as in
//! SQLite, whatever the database's locale, so keyset pages come out in the same order and the
//! indexes serve those comparisons.
//!
//! Until the backend ships (issue 5), step 1 may still change; after that, only new steps.

use tokio_postgres::Client;

use crate::StoreError;

/// The advisory lock key migrations hold (an arbitrary constant: "qss-migrate").
const MIGRATION_LOCK: i64 = 0x7173_732d_6d69_6772;

const MIGRATIONS: &[&str] = &[
    // 1: everything of SQLite's steps 1 and 2.
    r#"
    CREATE TABLE meta (
        key   TEXT COLLATE "C" PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE accounts (
        account_id TEXT COLLATE "C" PRIMARY KEY,
        name       TEXT NOT NULL,
        plan       TEXT NOT NULL,
        qss_addon  BOOLEAN NOT NULL,
        created_at BIGINT NOT NULL,
        settings   TEXT NOT NULL,
        deleted_at BIGINT
    );
    CREATE TABLE credentials (
        account_id  TEXT COLLATE "C" NOT NULL,
        client_id   TEXT COLLATE "C" NOT NULL,
        secret_hash BYTEA NOT NULL,
        scopes      TEXT NOT NULL,
        created_at  BIGINT NOT NULL,
        revoked_at  BIGINT,
        PRIMARY KEY (account_id, client_id)
    );
    CREATE UNIQUE INDEX credentials_by_client ON credentials (client_id);
    CREATE TABLE ingest_keys (
        account_id   TEXT COLLATE "C" NOT NULL,
        key_id       TEXT COLLATE "C" NOT NULL,
        secret_hash  BYTEA NOT NULL,
        created_at   BIGINT NOT NULL,
        last_used_at BIGINT,
        revoked_at   BIGINT,
        PRIMARY KEY (account_id, key_id)
    );
    CREATE UNIQUE INDEX ingest_keys_by_id ON ingest_keys (key_id);
    CREATE TABLE tokens (
        token_hash BYTEA PRIMARY KEY,
        account_id TEXT COLLATE "C" NOT NULL,
        client_id  TEXT COLLATE "C" NOT NULL,
        scopes     TEXT NOT NULL,
        expires_at BIGINT NOT NULL
    );
    CREATE INDEX tokens_by_expiry ON tokens (expires_at);
    -- Raw samples in acceptance order. Any node appends (seq from samples_seq, allocated
    -- under the samples advisory lock so that seq order is commit order); the node that
    -- holds the lease of the sample's partition places it. skey is the first 16 bytes of the
    -- SHA-256 of the SPEC's idempotency key (short keys keep the unique index cheap), so a
    -- resend is a duplicate whichever node takes it.
    CREATE SEQUENCE samples_seq;
    CREATE TABLE samples (
        seq         BIGINT PRIMARY KEY,
        account_id  TEXT COLLATE "C" NOT NULL,
        part        INTEGER NOT NULL DEFAULT 0,
        skey        BYTEA,
        received_ms BIGINT NOT NULL,
        ts          BIGINT NOT NULL,
        interval_s  BIGINT NOT NULL,
        route       TEXT NOT NULL,
        body        TEXT NOT NULL
    );
    CREATE UNIQUE INDEX samples_by_key ON samples (account_id, skey);
    CREATE INDEX samples_by_part ON samples (part, seq);
    -- Aggregation partitions (docs/postgres-design.md): one row each, leased to one node at a
    -- time; lease_token fences every commit of the holder; replay_from is where rebuilding
    -- the partition's state starts in the sample log.
    CREATE SEQUENCE lease_tokens;
    CREATE TABLE partitions (
        part        INTEGER PRIMARY KEY,
        owner       TEXT,
        lease_until BIGINT NOT NULL DEFAULT 0,
        lease_token BIGINT NOT NULL DEFAULT 0,
        replay_from BIGINT NOT NULL DEFAULT 0
    );
    INSERT INTO partitions (part) SELECT generate_series(0, 63);
    -- Live nodes, so that each takes its share of the partitions.
    CREATE TABLE nodes (
        node_id    TEXT COLLATE "C" PRIMARY KEY,
        seen_until BIGINT NOT NULL
    );
    CREATE TABLE instances (
        account_id       TEXT COLLATE "C" NOT NULL,
        instance_id      TEXT COLLATE "C" NOT NULL,
        kind             TEXT NOT NULL,
        series_id        TEXT COLLATE "C" NOT NULL,
        direction        TEXT,
        meeting_type     TEXT NOT NULL,
        first_seq        BIGINT NOT NULL,
        status           TEXT NOT NULL,
        end_ts           BIGINT,
        ended_explicitly BOOLEAN NOT NULL DEFAULT FALSE,
        part             INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (account_id, instance_id)
    );
    CREATE INDEX instances_unfinished ON instances (status) WHERE status <> 'closed';
    CREATE INDEX instances_closed_by_end ON instances (end_ts) WHERE status = 'closed';
    -- seq is the commit order that page snapshots rely on; it is allocated inside the
    -- committing transaction while it holds the events advisory lock, so that a smaller seq
    -- can never become visible after a larger one.
    CREATE SEQUENCE events_seq;
    CREATE TABLE events (
        seq                 BIGINT PRIMARY KEY,
        id                  TEXT COLLATE "C" NOT NULL,
        account_id          TEXT COLLATE "C" NOT NULL,
        event_type          TEXT NOT NULL,
        event_ts            BIGINT NOT NULL,
        meeting_id          TEXT COLLATE "C",
        meeting_instance_id TEXT COLLATE "C",
        participant_id      TEXT COLLATE "C",
        call_id             TEXT COLLATE "C",
        dedup_key           TEXT COLLATE "C" NOT NULL,
        body                TEXT NOT NULL
    );
    CREATE UNIQUE INDEX events_by_dedup ON events (account_id, dedup_key);
    CREATE UNIQUE INDEX events_by_time ON events (account_id, event_ts, id);
    CREATE UNIQUE INDEX events_by_id ON events (account_id, id);
    CREATE INDEX events_by_instance ON events (account_id, meeting_instance_id, event_ts)
        WHERE meeting_instance_id IS NOT NULL;
    CREATE TABLE webhooks (
        account_id            TEXT COLLATE "C" NOT NULL,
        webhook_id            TEXT COLLATE "C" NOT NULL,
        url                   TEXT NOT NULL,
        events                TEXT NOT NULL,
        -- Signing needs the secret itself (an HMAC key), so it cannot be stored hashed.
        secret                TEXT NOT NULL,
        previous_secret       TEXT,
        previous_secret_until BIGINT,
        status                TEXT NOT NULL,
        description           TEXT,
        max_age_seconds       BIGINT,
        created_at            BIGINT NOT NULL,
        validated_at          BIGINT,
        next_validation_at    BIGINT,
        validation_failures   BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (account_id, webhook_id)
    );
    CREATE TABLE deliveries (
        account_id       TEXT COLLATE "C" NOT NULL,
        delivery_id      TEXT COLLATE "C" NOT NULL,
        webhook_id       TEXT COLLATE "C" NOT NULL,
        event_id         TEXT COLLATE "C" NOT NULL,
        event_type       TEXT NOT NULL,
        status           TEXT NOT NULL,
        attempt_count    BIGINT NOT NULL DEFAULT 0,
        next_attempt_at  BIGINT,
        auto_retry       BOOLEAN NOT NULL DEFAULT TRUE,
        lease_until      BIGINT,
        lease_token      BIGINT,
        created_at       BIGINT NOT NULL,
        last_attempt_at  BIGINT,
        last_http_status BIGINT,
        last_error       TEXT,
        last_duration_ms BIGINT,
        PRIMARY KEY (account_id, delivery_id)
    );
    CREATE INDEX deliveries_due ON deliveries (webhook_id, next_attempt_at) WHERE status = 'pending';
    CREATE INDEX deliveries_by_webhook ON deliveries (account_id, webhook_id, created_at, delivery_id);
    CREATE INDEX deliveries_by_event ON deliveries (account_id, event_id);
    CREATE TABLE attempts (
        account_id    TEXT COLLATE "C" NOT NULL,
        delivery_id   TEXT COLLATE "C" NOT NULL,
        n             BIGINT NOT NULL,
        at            BIGINT NOT NULL,
        http_status   BIGINT,
        error         TEXT,
        duration_ms   BIGINT NOT NULL,
        response_body TEXT NOT NULL,
        PRIMARY KEY (account_id, delivery_id, n)
    );
    -- Nodes cache accounts and subscriptions; a change made through any node (or qss admin)
    -- tells the others at its commit.
    CREATE FUNCTION qss_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify(TG_ARGV[0], '');
        RETURN NULL;
    END $$;
    CREATE TRIGGER accounts_changed AFTER INSERT OR UPDATE OR DELETE ON accounts
        FOR EACH STATEMENT EXECUTE FUNCTION qss_notify_change('qss_accounts');
    CREATE TRIGGER webhooks_changed AFTER INSERT OR UPDATE OR DELETE ON webhooks
        FOR EACH STATEMENT EXECUTE FUNCTION qss_notify_change('qss_webhooks');
    "#,
];

/// The schema version [`migrate`] brings a database to.
pub const LATEST_VERSION: i32 = MIGRATIONS.len() as i32;

/// Applies every step not applied yet; safe when several nodes run it at once. Returns how
/// many steps this call applied (0 when another node, or an earlier start, did them).
pub async fn migrate(client: &mut Client) -> Result<usize, StoreError> {
    let mut applied = 0;
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i as i32 + 1;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let exists: bool = tx
            .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
            .await?
            .get(0);
        if !exists {
            tx.batch_execute(
                "CREATE TABLE schema_migrations (
                     version    INTEGER PRIMARY KEY,
                     applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
                 )",
            )
            .await?;
        }
        let done: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)",
                &[&version],
            )
            .await?
            .get(0);
        if !done {
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                &[&version],
            )
            .await?;
            applied += 1;
        }
        tx.commit().await?;
    }
    Ok(applied)
}
