//! Part a: ingest samples/s at batch sizes 1, 100 and 1,000, and beside each its ceilings
//! measured in the same run:
//! - HTTP: the same clients POSTing the same bodies to a bare axum route that reads the body and
//!   answers 202 (same hyper, same runtime, no work);
//! - SQLite: the same rows (the sample log rows the server writes, same text) inserted with
//!   rusqlite into a fresh qss database, same pragmas, in transactions as large as the server's
//!   average group commit in the ingest run;
//! - JSON: the same bodies parsed on one core, by serde_json into a `Value` and by qss's own
//!   validating parser.
//!
//! The load generator ([`load`]) takes several servers, for the postgres part's three nodes.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use qss_domain::ingest::{BodyFormat, IngestLimits, parse_batch};
use serde::Serialize;

use crate::common::{BenchAccount, BenchServer, Latency, batch_body, now_ms};

pub const CLIENTS: usize = 8;
const PARTICIPANTS: usize = 5_000;
const WARM_UP: Duration = Duration::from_secs(2);
const MEASURE: Duration = Duration::from_secs(6);
const CEILING_MEASURE: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Serialize)]
pub struct IngestRun {
    pub batch: usize,
    pub clients: usize,
    pub body_bytes: usize,
    pub samples_per_s: f64,
    pub requests_per_s: f64,
    pub failed: u64,
    pub latency: Latency,
    pub group_commits_per_s: f64,
    pub samples_per_group: f64,
    pub aggregation_busy: f64,
    pub http_ceiling_requests_per_s: f64,
    pub sqlite_ceiling_samples_per_s: f64,
    pub json_value_samples_per_s_one_core: f64,
    pub json_qss_samples_per_s_one_core: f64,
}

/// One request seen by a client: when it finished, how long it took, whether it got its 2xx.
struct Timed {
    done: Instant,
    latency: Duration,
    ok: bool,
}

pub async fn run(batch: usize) -> anyhow::Result<IngestRun> {
    let server = BenchServer::start().await?;
    let account = server.create_account("Bench ingest").await?;
    let body_bytes = batch_body(&(0..batch).collect::<Vec<_>>(), &mut vec![0; PARTICIPANTS]).len();
    let servers = [server];
    let load = load(&servers, &account, batch, WARM_UP, MEASURE).await?;
    let [server] = servers;
    server.stop().await?;

    let http = http_ceiling(batch).await?;
    let rows = load.samples_per_group().round().max(1.0) as usize;
    let sqlite = tokio::task::spawn_blocking(move || sqlite_ceiling(batch, rows)).await??;
    let (json_value, json_qss) = tokio::task::spawn_blocking(move || json_ceilings(batch)).await?;
    Ok(IngestRun {
        batch,
        clients: CLIENTS,
        body_bytes,
        samples_per_s: load.samples_per_s(),
        requests_per_s: load.requests_per_s(),
        failed: load.failed,
        latency: Latency::of(&load.latencies),
        group_commits_per_s: load.groups / load.seconds,
        samples_per_group: load.samples_per_group(),
        aggregation_busy: load.group_seconds / load.seconds,
        http_ceiling_requests_per_s: http,
        sqlite_ceiling_samples_per_s: sqlite,
        json_value_samples_per_s_one_core: json_value,
        json_qss_samples_per_s_one_core: json_qss,
    })
}

/// What the clients saw and what the servers' group commits did over the measured span.
pub struct Load {
    pub batch: usize,
    pub seconds: f64,
    pub requests: u64,
    pub failed: u64,
    pub latencies: Vec<Duration>,
    /// Group commits of all the servers, and the seconds they took (`qss_group_commit_seconds`:
    /// on SQLite the aggregation thread's group, on PostgreSQL each node's append to the log).
    pub groups: f64,
    pub group_seconds: f64,
}

impl Load {
    pub fn samples_per_s(&self) -> f64 {
        (self.requests * self.batch as u64) as f64 / self.seconds
    }

    pub fn requests_per_s(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    pub fn samples_per_group(&self) -> f64 {
        if self.groups > 0.0 {
            (self.requests * self.batch as u64) as f64 / self.groups
        } else {
            0.0
        }
    }
}

/// `CLIENTS` clients posting `batch`-sample bodies for `account`, their requests spread
/// round-robin over `servers`; `warm_up`, then `measure` measured.
pub async fn load(
    servers: &[BenchServer],
    account: &BenchAccount,
    batch: usize,
    warm_up: Duration,
    measure: Duration,
) -> anyhow::Result<Load> {
    let urls: Vec<String> = servers.iter().map(|s| s.telemetry_url(account)).collect();
    let started = Instant::now();
    let measure_from = started + warm_up;
    let measure_to = measure_from + measure;
    let tasks = spawn_clients(&urls, &account.ingest_key, batch, measure_to, 202);
    tokio::time::sleep_until(measure_from.into()).await;
    let before = group_commits(servers).await?;
    tokio::time::sleep_until(measure_to.into()).await;
    let after = group_commits(servers).await?;
    let (requests, failed, latencies) = collect(tasks, measure_from, measure_to).await?;
    Ok(Load {
        batch,
        seconds: measure.as_secs_f64(),
        requests,
        failed,
        latencies,
        groups: after.1 - before.1,
        group_seconds: after.0 - before.0,
    })
}

/// `(seconds, count)` of `qss_group_commit_seconds`, summed over `servers`.
async fn group_commits(servers: &[BenchServer]) -> anyhow::Result<(f64, f64)> {
    let (mut sum, mut count) = (0.0, 0.0);
    for s in servers {
        let (s, c) = s.histogram("qss_group_commit_seconds").await?;
        sum += s;
        count += c;
    }
    Ok((sum, count))
}

type ClientTasks = Vec<tokio::task::JoinHandle<Vec<Timed>>>;

/// `CLIENTS` keep-alive clients posting `batch`-sample bodies until `until`, each sending its
/// requests round-robin over `urls` (client `c` starts at `urls[c % urls.len()]`). Each owns
/// the participants `p` with `p % CLIENTS == c`, so timestamps stay unique per participant.
fn spawn_clients(
    urls: &[String],
    key: &str,
    batch: usize,
    until: Instant,
    expect: u16,
) -> ClientTasks {
    (0..CLIENTS)
        .map(|c| {
            let (urls, key) = (urls.to_vec(), key.to_string());
            tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .build()
                    .expect("a client");
                let mine: Vec<usize> = (c..PARTICIPANTS).step_by(CLIENTS).collect();
                let mut last_ts = vec![0i64; PARTICIPANTS];
                let mut next = 0usize;
                let mut seen = Vec::new();
                let mut sent = c;
                while Instant::now() < until {
                    let url = &urls[sent % urls.len()];
                    sent += 1;
                    let picks: Vec<usize> =
                        (0..batch).map(|i| mine[(next + i) % mine.len()]).collect();
                    next = (next + batch) % mine.len();
                    let body = batch_body(&picks, &mut last_ts);
                    let t0 = Instant::now();
                    let r = http
                        .post(url)
                        .bearer_auth(&key)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await;
                    let ok = match r {
                        Ok(r) => {
                            let ok = r.status().as_u16() == expect;
                            let _ = r.bytes().await;
                            ok
                        }
                        Err(_) => false,
                    };
                    let done = Instant::now();
                    seen.push(Timed {
                        done,
                        latency: done - t0,
                        ok,
                    });
                }
                seen
            })
        })
        .collect()
}

/// `(successful requests, failed requests, latencies)` of the requests that finished inside
/// `[from, to]`.
async fn collect(
    tasks: ClientTasks,
    from: Instant,
    to: Instant,
) -> anyhow::Result<(u64, u64, Vec<Duration>)> {
    let (mut ok, mut failed, mut latencies) = (0, 0, Vec::new());
    for t in tasks {
        for r in t.await? {
            if r.done < from || r.done > to {
                continue;
            }
            if r.ok {
                ok += 1;
                latencies.push(r.latency);
            } else {
                failed += 1;
            }
        }
    }
    Ok((ok, failed, latencies))
}

/// Requests/s of the same clients and bodies against a route that only reads the body.
async fn http_ceiling(batch: usize) -> anyhow::Result<f64> {
    let app = axum::Router::new().route(
        "/discard",
        post(|body: Bytes| async move {
            std::hint::black_box(body.len());
            StatusCode::ACCEPTED
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/discard", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let from = Instant::now() + Duration::from_secs(1);
    let to = from + CEILING_MEASURE;
    let tasks = spawn_clients(&[url], "no-auth", batch, to, 202);
    let (ok, _, _) = collect(tasks, from, to).await?;
    server.abort();
    Ok(ok as f64 / CEILING_MEASURE.as_secs_f64())
}

/// The rows the server would write for these samples: `(ts, body)` as the aggregation thread
/// encodes them.
fn sample_rows(batch: usize, count: usize) -> anyhow::Result<Vec<(i64, String)>> {
    let limits = IngestLimits {
        max_samples: 10_000,
        max_sample_age_ms: 86_400_000,
    };
    let mut last_ts = vec![0i64; PARTICIPANTS];
    let mut rows = Vec::with_capacity(count);
    let mut p = 0;
    while rows.len() < count {
        let picks: Vec<usize> = (0..batch).map(|i| (p + i) % PARTICIPANTS).collect();
        p += batch;
        let body = batch_body(&picks, &mut last_ts);
        let samples = parse_batch(body.as_bytes(), BodyFormat::Json, now_ms(), &limits)
            .map_err(|e| anyhow::anyhow!("bench body rejected: {e:?}"))?;
        for s in &samples {
            rows.push((s.timestamp(), serde_json::to_string(s)?));
        }
    }
    rows.truncate(count);
    Ok(rows)
}

/// Sample rows/s inserted straight into a fresh qss database (WAL, `synchronous = FULL`, as the
/// server opens it), `rows_per_commit` per transaction.
fn sqlite_ceiling(batch: usize, rows_per_commit: usize) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("ceiling.db");
    drop(qss_store::SqliteStore::open_exclusive(&path)?);
    let mut c = rusqlite::Connection::open(&path)?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "FULL")?;
    c.pragma_update(None, "wal_autocheckpoint", 4000)?;
    let rows = sample_rows(batch.max(100), 50_000)?;
    let started = Instant::now();
    let mut inserted = 0usize;
    let mut seq = 1i64;
    let received = now_ms();
    while started.elapsed() < CEILING_MEASURE {
        let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO samples (seq, account_id, received_ms, ts, interval_s, route, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for _ in 0..rows_per_commit {
                let (ts, body) = &rows[inserted % rows.len()];
                st.execute(rusqlite::params![
                    seq,
                    "acct_bench_ceiling_0000",
                    received,
                    ts,
                    60,
                    "mi_01kbenchceiling00000000000",
                    body
                ])?;
                seq += 1;
                inserted += 1;
            }
        }
        tx.commit()?;
    }
    Ok(inserted as f64 / started.elapsed().as_secs_f64())
}

/// Samples/s parsed on one core: `(serde_json::Value, qss parse_batch)`.
fn json_ceilings(batch: usize) -> (f64, f64) {
    let mut last_ts = vec![0i64; PARTICIPANTS];
    let bodies: Vec<String> = (0..(20_000 / batch).max(4))
        .map(|b| {
            let picks: Vec<usize> = (0..batch).map(|i| (b * batch + i) % PARTICIPANTS).collect();
            batch_body(&picks, &mut last_ts)
        })
        .collect();
    let limits = IngestLimits {
        max_samples: 10_000,
        max_sample_age_ms: 86_400_000,
    };
    let now = now_ms();
    let rate = |parse: &dyn Fn(&str) -> usize| {
        let started = Instant::now();
        let mut samples = 0usize;
        while started.elapsed() < Duration::from_secs(2) {
            for b in &bodies {
                samples += parse(b);
            }
        }
        samples as f64 / started.elapsed().as_secs_f64()
    };
    let value = rate(&|b| {
        let v: serde_json::Value = serde_json::from_str(b).expect("bench bodies are JSON");
        v["samples"].as_array().map_or(0, Vec::len)
    });
    let qss =
        rate(&|b| parse_batch(b.as_bytes(), BodyFormat::Json, now, &limits).map_or(0, |s| s.len()));
    (value, qss)
}
