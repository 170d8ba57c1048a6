//! Part f: the same workloads on PostgreSQL, with one node and with three nodes on one
//! database (three `qss_server::start` in this process, each on its own 127.0.0.1 port; the
//! clients spread their requests round-robin over the nodes).
//!
//! The database is a throwaway PostgreSQL cluster (`crates/pgtest`) with `fsync`,
//! `synchronous_commit` and `full_page_writes` off: a commit there is not durable, where the
//! SQLite figures are with `synchronous = FULL`. Each workload gets a fresh database (the
//! pages' one serves its one-node and three-node measures).
//! - ingest: the ingest part's load generator at batch 100, 8 clients, 2 s warm-up, 10 s
//!   measured; beside it, how many samples each node's append to the shared log carried.
//! - deliveries: the delivery part's workload (events committed through the first node's store
//!   in commits of 500 at 12,000/s offered for 5 s), one subscription; then a backlog of 20,000
//!   committed in one transaction, drained from its commit. With three nodes every node's
//!   dispatcher claims (SKIP LOCKED), each with a third of the endpoint's cap of 16.
//! - events pages: `QSS_BENCH_PG_EVENTS` (default 1,000,000) participant events like the pages
//!   part's, five accounts, one million per day of `event_ts`, written by one
//!   `INSERT … SELECT generate_series` per 100,000 (ids, dedup keys and bodies shaped as the
//!   server writes them, `seq` from `events_seq` in `event_ts` order), then `VACUUM ANALYZE` as
//!   autovacuum would; then the pages part's 1,000 first and next pages through one node, and
//!   again spread over three (each next page on another node than its first page).
//!
//! Skipped, saying so, when PostgreSQL is not installed.

use std::time::{Duration, Instant};

use qss_pgtest::PgCluster;
use serde::Serialize;

use crate::common::{BenchServer, Latency};
use crate::delivery::{self, DeliveryRun};
use crate::ingest::{self, CLIENTS};
use crate::pages::{self, ACCOUNTS, DAY_MS, MEETINGS, PARTICIPANTS, PER_DAY, Pages};

pub const NODES: [usize; 2] = [1, 3];
pub const INGEST_BATCH: usize = 100;
const WARM_UP: Duration = Duration::from_secs(2);
const MEASURE: Duration = Duration::from_secs(10);
const DELIVERY_RATE: u64 = 12_000;
const DELIVERY_SECONDS: u64 = 5;
pub const BACKLOG: usize = 20_000;
/// Events per fill statement.
const FILL_CHUNK: i64 = 100_000;
/// Disk a stored event takes with its indexes (about 1.6 KB measured: 1.6 GB at 1 million),
/// with a margin.
const BYTES_PER_EVENT: u64 = 2_000;
/// What differs from a production cluster (set by `crates/pgtest`).
pub const SETTINGS: &str = "fsync=off, synchronous_commit=off, full_page_writes=off";

#[derive(Debug, Serialize)]
pub struct Postgres {
    pub version: String,
    pub settings: &'static str,
    pub ingest: Vec<PgIngest>,
    pub delivery: Vec<PgDelivery>,
    pub pages: Vec<PgPages>,
    pub seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct PgIngest {
    pub nodes: usize,
    pub batch: usize,
    pub clients: usize,
    pub samples_per_s: f64,
    pub requests_per_s: f64,
    pub failed: u64,
    pub latency: Latency,
    pub appends_per_s: f64,
    pub samples_per_append: f64,
    /// Share of the measured time each node's ingest writer spent appending (mean per node).
    pub writer_busy: f64,
}

#[derive(Debug, Serialize)]
pub struct PgDelivery {
    pub nodes: usize,
    #[serde(flatten)]
    pub run: DeliveryRun,
}

#[derive(Debug, Serialize)]
pub struct PgPages {
    pub nodes: usize,
    #[serde(flatten)]
    pub pages: Pages,
}

/// Runs the part, or returns `None` (having said why) when PostgreSQL is not installed.
pub async fn run() -> anyhow::Result<Option<Postgres>> {
    let started = Instant::now();
    if !installed() {
        eprintln!("postgres: skipped, PostgreSQL is not installed (apt-get install -y postgresql)");
        return Ok(None);
    }
    let events: usize = std::env::var("QSS_BENCH_PG_EVENTS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(1_000_000);
    pages::check_free_disk(events as u64 * BYTES_PER_EVENT)?;
    let Some(pg) = tokio::task::block_in_place(|| PgCluster::start("the postgres bench part"))
    else {
        return Ok(None);
    };
    let mut out = Postgres {
        version: String::new(),
        settings: SETTINGS,
        ingest: Vec::new(),
        delivery: Vec::new(),
        pages: Vec::new(),
        seconds: 0.0,
    };
    for nodes in NODES {
        eprintln!("  postgres: ingest, batch {INGEST_BATCH}, {nodes} node(s) ...");
        out.ingest.push(ingest(&pg, nodes).await?);
    }
    for nodes in NODES {
        eprintln!("  postgres: webhook deliveries, {nodes} node(s) ...");
        let url = create_database(&pg);
        let servers = start_nodes(&url, nodes).await?;
        let (run, _) =
            delivery::measure(&servers, DELIVERY_RATE, DELIVERY_SECONDS, BACKLOG, BACKLOG).await?;
        stop_nodes(servers).await?;
        out.delivery.push(PgDelivery { nodes, run });
    }
    let (version, pages) = pages_at(&pg, events).await?;
    out.version = version;
    out.pages = pages;
    out.seconds = started.elapsed().as_secs_f64();
    Ok(Some(out))
}

/// Whether a PostgreSQL server is installed where Debian puts it (`crates/pgtest` looks
/// there): checked first, so that a missing PostgreSQL skips the part even where `CI=true`
/// makes `PgCluster::start` insist.
fn installed() -> bool {
    std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().any(|e| e.path().join("bin/initdb").is_file()))
        .unwrap_or(false)
}

fn create_database(pg: &PgCluster) -> String {
    tokio::task::block_in_place(|| pg.create_database())
}

/// `n` nodes on `url`, started one after another (each applies the migrations under their
/// lock, then takes its share of the aggregation partitions).
async fn start_nodes(url: &str, n: usize) -> anyhow::Result<Vec<BenchServer>> {
    let mut nodes = Vec::with_capacity(n);
    for _ in 0..n {
        nodes.push(BenchServer::start_on(Some(url)).await?);
    }
    Ok(nodes)
}

/// Stops the nodes together (each drains its own work).
async fn stop_nodes(nodes: Vec<BenchServer>) -> anyhow::Result<()> {
    let stopping: Vec<_> = nodes.into_iter().map(|n| tokio::spawn(n.stop())).collect();
    for s in stopping {
        s.await??;
    }
    Ok(())
}

async fn ingest(pg: &PgCluster, nodes: usize) -> anyhow::Result<PgIngest> {
    let url = create_database(pg);
    let servers = start_nodes(&url, nodes).await?;
    // The other nodes read the account and its key from the database on first use.
    let account = servers[0].create_account("Bench ingest").await?;
    let load = ingest::load(&servers, &account, INGEST_BATCH, WARM_UP, MEASURE).await?;
    stop_nodes(servers).await?;
    Ok(PgIngest {
        nodes,
        batch: INGEST_BATCH,
        clients: CLIENTS,
        samples_per_s: load.samples_per_s(),
        requests_per_s: load.requests_per_s(),
        failed: load.failed,
        latency: Latency::of(&load.latencies),
        appends_per_s: load.groups / load.seconds,
        samples_per_append: load.samples_per_group(),
        writer_busy: load.group_seconds / load.seconds / nodes as f64,
    })
}

/// A client of `url` for the fill; its connection runs on a task of its own.
async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("postgres: the fill's connection failed: {e}");
        }
    });
    Ok(client)
}

/// Fills a database with `events` events and measures pages through one node, then three.
/// Returns the server's version too.
async fn pages_at(pg: &PgCluster, events: usize) -> anyhow::Result<(String, Vec<PgPages>)> {
    let url = create_database(pg);
    let mut servers = start_nodes(&url, 1).await?;
    let mut accounts = Vec::new();
    for i in 0..ACCOUNTS {
        accounts.push(
            servers[0]
                .create_account(&format!("Bench events {i}"))
                .await?,
        );
    }
    let ids: Vec<String> = accounts.iter().map(|a| a.account_id.clone()).collect();
    let db = connect(&url).await?;
    let version: String = db.query_one("SHOW server_version", &[]).await?.get(0);

    eprintln!("  postgres: filling {events} events ...");
    let end = crate::common::now_ms() - 5_000;
    let span = events as i64 * DAY_MS / PER_DAY as i64;
    let start = end - span;
    let fill_started = Instant::now();
    let sql = fill_sql();
    let total = events as i64;
    let mut from = 0i64;
    while from < total {
        let to = (from + FILL_CHUNK).min(total);
        db.execute(&sql, &[&from, &to, &total, &start, &span, &ids])
            .await?;
        from = to;
    }
    // A long-lived table has been vacuumed and analysed: hint bits set, statistics current.
    db.batch_execute("VACUUM ANALYZE events").await?;
    let fill_events_per_s = events as f64 / fill_started.elapsed().as_secs_f64();
    let bytes: i64 = db
        .query_one("SELECT pg_database_size(current_database())", &[])
        .await?
        .get(0);

    let mut out = Vec::new();
    for nodes in NODES {
        if servers.len() < nodes {
            servers.extend(start_nodes(&url, nodes - servers.len()).await?);
        }
        eprintln!("  postgres: events pages, {nodes} node(s) ...");
        let mut p = pages::measure(&servers, &accounts[0].token, &ids[0], start, end).await?;
        p.events = events;
        p.fill_events_per_s = fill_events_per_s;
        p.database_bytes = bytes as u64;
        out.push(PgPages { nodes, pages: p });
    }
    stop_nodes(servers).await?;
    Ok((version, out))
}

/// One statement inserting events `$1..$2` of `$3`: `event_ts` spread evenly over `$5` ms from
/// `$4`, account `$6[i % 5]`. Rows as the pages part commits through the store: a
/// `qss.meeting_participant_qos` of about 700 bytes, an id `evt_` + ULID text (the time
/// part from `event_ts`, the rest from a hash of `i`), one instance per meeting and hour, the
/// dedup key of a 60 s participant window.
fn fill_sql() -> String {
    const CROCKFORD: &str = "'0123456789ABCDEFGHJKMNPQRSTVWXYZ'";
    let time_part: Vec<String> = (0..10)
        .rev()
        .map(|k| format!("substr({CROCKFORD}, ((ts >> {}) & 31)::INT + 1, 1)", 5 * k))
        .collect();
    format!(
        r##"
        INSERT INTO events (seq, id, account_id, event_type, event_ts, meeting_id,
                            meeting_instance_id, participant_id, call_id, dedup_key, body)
        SELECT nextval('events_seq'), id, account_id, 'qss.meeting_participant_qos', ts,
               meeting_id, instance, participant_id, NULL,
               'w' || chr(31) || instance || chr(31) || participant_id || chr(31) || '60'
                   || chr(31) || win,
               format('{{"id":"%s","event":"qss.meeting_participant_qos","event_ts":%s,'
                   || '"payload":{{"account_id":"%s","object":{{"meeting_id":"%s",'
                   || '"meeting_instance_id":"%s","meeting_type":"meeting",'
                   || '"participant_id":"%s","user_id":"user-%s","user_name":"Participant %s",'
                   || '"timestamp":"%s","interval_seconds":60,"sample_count":10,"metrics":{{'
                   || '"audio":{{"bitrate":64.2,"latency":%s,"jitter":7.5,"packet_loss":0.4}},'
                   || '"video":{{"bitrate":1480,"latency":%s,"jitter":10.25,"packet_loss":0.25,'
                   || '"resolution":"1280x720","frame_rate":29.5}},"cpu_usage":37.5}},'
                   || '"quality":{{"mos":4.3,"r_factor":88.41,"grade":"good","issues":[]}}}}}}}}',
                   id, ts, account_id, meeting_id, instance, participant_id, p5, p,
                   to_char(to_timestamp(win / 1000) AT TIME ZONE 'UTC',
                           'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                   latency, latency + 12)
        FROM (
            SELECT i, ts, p, lpad(p::TEXT, 5, '0') AS p5, latency,
                   ($6::TEXT[])[i % {ACCOUNTS} + 1] AS account_id,
                   'meeting-' || lpad(m::TEXT, 3, '0') AS meeting_id,
                   'participant-' || lpad(p::TEXT, 5, '0') AS participant_id,
                   'mi_' || lpad((ts / 3600000)::TEXT, 10, '0')
                       || lpad(to_hex(m * 40503 + 7), 16, '0') AS instance,
                   (ts - 70000) / 60000 * 60000 AS win,
                   'evt_' || {time} || upper(substr(md5(i::TEXT), 1, 16)) AS id
            FROM (
                SELECT i, $4::BIGINT + i * $5::BIGINT / $3::BIGINT AS ts,
                       (i / {ACCOUNTS}) % {MEETINGS} AS m,
                       (i / {ACCOUNTS}) % {PARTICIPANTS} AS p,
                       (20 + floor(random() * 180))::INT AS latency
                FROM generate_series($1::BIGINT, $2::BIGINT - 1) AS g(i)
            ) g
        ) e"##,
        time = time_part.join(" || "),
    )
}
