//! Overload (issue 7): when the store cannot keep up, ingest answers 503 with `Retry-After`
//! instead of queueing without bound, and the server's memory stays bounded.
//!
//! The store is slowed for real: the test holds the write lock from another connection for
//! several seconds (SQLite's `BEGIN IMMEDIATE`; on PostgreSQL, `LOCK TABLE samples`), so no
//! ingest commit can happen, while clients keep sending large batches and give up on each after one second (the
//! requests a naive server would keep queued). The server is a real `qss serve` process, so
//! its resident memory can be read from `/proc`.

mod common;
mod serve_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use serve_support::*;

const CLIENTS: usize = 24;
/// Samples per batch: about 2 MB of JSON.
const BATCH: usize = 4000;
const MAX_IN_FLIGHT: &str = "8";
const STALL: Duration = Duration::from_secs(8);

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024.0
}

/// A batch of `BATCH` participant samples no other batch shares a key with, from 20
/// participants per client (so the aggregation's own state stays small).
fn batch(client: usize, n: u64, base_ms: i64) -> Vec<u8> {
    let samples: Vec<Value> = (0..BATCH)
        .map(|i| {
            json!({"kind": "participant_qos", "meeting_id": format!("m{client}"),
                   "participant_id": format!("p{}", i % 20),
                   "timestamp": common::iso(base_ms + (n as i64) * BATCH as i64 + i as i64),
                   "metrics": {"audio": {"bitrate": 64, "latency": 40, "jitter": 5, "packet_loss": 0.1}}})
        })
        .collect();
    serde_json::to_vec(&json!({"samples": samples})).unwrap()
}

#[derive(Default)]
struct Seen {
    accepted_samples: AtomicU64,
    ok: AtomicU64,
    unavailable: AtomicU64,
    gave_up: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_sqlite_store_gets_503s_with_retry_after_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let database = sqlite_database(dir.path());
    stalled_store(dir.path(), &database).await;
}

/// The same on PostgreSQL, the sample log locked by another session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_postgres_store_gets_503s_with_retry_after_and_memory_stays_bounded() {
    let Some(pg) = qss_pgtest::PgCluster::start("overload") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    stalled_store(dir.path(), &pg.create_database()).await;
}

/// Holds the store's write lock for [`STALL`] from another connection; returns once it holds.
async fn stall(database: &str) -> tokio::task::JoinHandle<()> {
    let (locked_tx, locked_rx) = tokio::sync::oneshot::channel();
    let handle = match database.strip_prefix("sqlite://") {
        // SQLite's write lock.
        Some(path) => {
            let path = path.to_string();
            tokio::task::spawn_blocking(move || {
                let c = rusqlite::Connection::open(path).unwrap();
                c.execute_batch("BEGIN IMMEDIATE").unwrap();
                locked_tx.send(()).unwrap();
                std::thread::sleep(STALL);
                c.execute_batch("ROLLBACK").unwrap();
            })
        }
        // PostgreSQL: the sample log, locked against every append.
        None => {
            let url = database.to_string();
            tokio::spawn(async move {
                let (mut client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(connection);
                let tx = client.transaction().await.unwrap();
                tx.batch_execute("LOCK TABLE samples IN EXCLUSIVE MODE")
                    .await
                    .unwrap();
                locked_tx.send(()).unwrap();
                tokio::time::sleep(STALL).await;
                tx.rollback().await.unwrap();
            })
        }
    };
    locked_rx.await.unwrap();
    handle
}

async fn stalled_store(dir: &std::path::Path, database: &str) {
    let server = ServerProcess::start(
        dir,
        "overload",
        database,
        &[
            ("QSS_INGEST_MAX_IN_FLIGHT", MAX_IN_FLIGHT),
            ("QSS_INGEST_COMMIT_TIMEOUT_MS", "2000"),
            ("QSS_RATE_LIMIT_INGEST", "0"),
        ],
    )
    .await;
    let pid = server.child.id();
    let account = create_account(&server.base).await;
    let url = format!(
        "{}/v2/accounts/{}/qss/telemetry",
        server.base, account.account_id
    );
    let http = reqwest::Client::new();
    let base_ms = now_ms() - 60_000;
    // Warm up: the server at work before the stall.
    for n in 0..3 {
        let r = http
            .post(&url)
            .bearer_auth(&account.ingest_key)
            .header("content-type", "application/json")
            .body(batch(99, n, base_ms))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    let baseline = rss_mib(pid);

    let locker = stall(database).await;
    let stalled_until = Instant::now() + STALL;

    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (url, key, seen, stop) = (
            url.clone(),
            account.ingest_key.clone(),
            seen.clone(),
            stop.clone(),
        );
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let r = http
                    .post(&url)
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .body(batch(c, n, base_ms))
                    .timeout(Duration::from_secs(1))
                    .send()
                    .await;
                let Ok(r) = r else {
                    seen.gave_up.fetch_add(1, Ordering::SeqCst);
                    continue;
                };
                match r.status().as_u16() {
                    202 => {
                        seen.ok.fetch_add(1, Ordering::SeqCst);
                        seen.accepted_samples
                            .fetch_add(BATCH as u64, Ordering::SeqCst);
                    }
                    503 => {
                        let retry_after = r.headers().get("retry-after").cloned();
                        let body: Value = r.json().await.unwrap();
                        assert_eq!(body["code"], 503, "{body}");
                        assert!(
                            retry_after.is_some_and(|v| v
                                .to_str()
                                .unwrap()
                                .parse::<u64>()
                                .unwrap()
                                >= 1),
                            "a 503 without Retry-After"
                        );
                        seen.unavailable.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    other => panic!("unexpected {other}: {}", r.text().await.unwrap()),
                }
            }
        }));
    }
    let mut peak = baseline;
    while Instant::now() < stalled_until {
        peak = peak.max(rss_mib(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    locker.await.unwrap();
    // Past the stall, the store catches up and batches are acknowledged again.
    let ok_during_stall = seen.ok.load(Ordering::SeqCst);
    let recovered_by = Instant::now() + Duration::from_secs(20);
    while seen.ok.load(Ordering::SeqCst) == ok_during_stall && Instant::now() < recovered_by {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }

    let (ok, unavailable, gave_up) = (
        seen.ok.load(Ordering::SeqCst),
        seen.unavailable.load(Ordering::SeqCst),
        seen.gave_up.load(Ordering::SeqCst),
    );
    eprintln!(
        "rss baseline {baseline:.0} MiB, peak during the stall {peak:.0} MiB; 202: {ok} ({ok_during_stall} during the stall), 503: {unavailable}, client gave up: {gave_up}"
    );
    assert!(
        unavailable >= CLIENTS as u64,
        "hardly any 503: {unavailable}"
    );
    assert!(
        ok > ok_during_stall,
        "ingest did not recover after the stall"
    );
    // Bounded: at most MAX_IN_FLIGHT batches (about 2 MB of JSON, some 10 MB parsed, each)
    // are held at once, whatever the clients send; unbounded, the requests the clients gave
    // up on would hold hundreds of MB.
    assert!(
        peak - baseline < 150.0,
        "memory grew from {baseline:.0} to {peak:.0} MiB during the stall"
    );
    // Nothing acknowledged is lost.
    let metrics = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let stored: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("qss_samples_ingested_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    let acked = seen.accepted_samples.load(Ordering::SeqCst) as f64 + 3.0 * BATCH as f64;
    assert!(
        stored >= acked,
        "{stored} samples stored, {acked} acknowledged"
    );
    assert!(
        metrics.contains("qss_ingest_overloaded_total"),
        "no overload metric"
    );
}
