//! Ingest and events-page benchmark: `cargo bench -p qss --bench ingest`.
//!
//! Part 1 runs a whole qss server in this process (SQLite file in a temporary folder, the
//! system clock) and drives it over loopback HTTP with C keep-alive clients (default 8,
//! `QSS_BENCH_CLIENTS`) posting 100-sample JSON batches of realistic `participant_qos` samples
//! (audio, video, CPU; about 400 bytes each) for 5,000 participants in 100 meetings, with
//! timestamps at `now`, unique per participant. After a 2 s warm-up it measures for
//! `QSS_BENCH_SECONDS` (default 10): samples/s, requests/s and request latency.
//!
//! Part 2 fills a fresh database with 1,000,000 participant events (about 700 bytes each, five
//! accounts, `event_ts` spread over the last 24 h) through the store's group commit, then times
//! 2,000 sequential `GET /qss/events?page_size=30` requests at random `from` in the last day.
//!
//! Clients and server share the machine (and here its two cores), so the figures are a floor
//! for the server alone. Results are printed as a markdown table and written as JSON to
//! `<target dir>/bench-ingest.json`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use qss_store::{NewEvent, WriteBatch};
use rand::Rng;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const ADMIN_TOKEN: &str = "bench-admin-token-0123456789abcdef";
const BATCH_SAMPLES: usize = 100;
const PARTICIPANTS: usize = 5_000;
const MEETINGS: usize = 100;
const WARM_UP: Duration = Duration::from_secs(2);
const EVENTS_TOTAL: usize = 1_000_000;
const EVENTS_PER_COMMIT: usize = 10_000;
const EVENT_ACCOUNTS: usize = 5;
const PAGE_REQUESTS: usize = 2_000;
const DAY_MS: i64 = 86_400_000;

fn main() -> anyhow::Result<()> {
    let clients = env_usize("QSS_BENCH_CLIENTS", 8);
    let seconds = env_usize("QSS_BENCH_SECONDS", 10) as u64;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let ingest = rt.block_on(ingest_bench(clients, Duration::from_secs(seconds)))?;
    let pages = rt.block_on(events_page_bench())?;
    report(&ingest, &pages)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&v| v > 0)
        .unwrap_or(default)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn iso(ms: i64) -> String {
    qss_domain::timefmt::format_ms_precise(ms)
}

// ---------------------------------------------------------------------------------------------
// An in-process server
// ---------------------------------------------------------------------------------------------

struct BenchServer {
    base: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    server: qss_server::Server,
    _dir: tempfile::TempDir,
}

struct BenchAccount {
    account_id: String,
    ingest_key: String,
    client_id: String,
    client_secret: String,
}

impl BenchServer {
    async fn start() -> anyhow::Result<BenchServer> {
        let dir = tempfile::tempdir()?;
        let overrides = vec![
            (
                "database".to_string(),
                format!("sqlite://{}", dir.path().join("qss.db").display()),
            ),
            ("admin_token".to_string(), ADMIN_TOKEN.to_string()),
            ("listen".to_string(), "127.0.0.1:0".to_string()),
        ];
        let config = qss_server::Config::load(None, Vec::new(), &overrides)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let shutdown = CancellationToken::new();
        let server = qss_server::start(
            config,
            listener,
            Arc::new(qss_api::SystemClock),
            shutdown.clone(),
        )
        .await?;
        Ok(BenchServer {
            base: format!("http://{}", server.addr),
            http: reqwest::Client::new(),
            shutdown,
            server,
            _dir: dir,
        })
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.server.wait().await
    }

    async fn create_account(&self, name: &str) -> anyhow::Result<BenchAccount> {
        let r = self
            .http
            .post(format!("{}/admin/accounts", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"name": name, "plan": "business", "qss_addon": true}))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 201, "creating an account: {}", r.status());
        let v: Value = r.json().await?;
        let s = |p: &str| {
            v.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        Ok(BenchAccount {
            account_id: s("/account_id"),
            ingest_key: s("/ingest_key/ingest_key"),
            client_id: s("/credentials/client_id"),
            client_secret: s("/credentials/client_secret"),
        })
    }

    async fn token(&self, a: &BenchAccount) -> anyhow::Result<String> {
        let r = self
            .http
            .post(format!(
                "{}/oauth/token?grant_type=account_credentials&account_id={}",
                self.base, a.account_id
            ))
            .basic_auth(&a.client_id, Some(&a.client_secret))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 200, "token: {}", r.status());
        let v: Value = r.json().await?;
        Ok(v["access_token"].as_str().unwrap_or("").to_string())
    }

    /// `(sum, count)` of a Prometheus histogram from `/metrics`.
    async fn histogram(&self, name: &str) -> anyhow::Result<(f64, f64)> {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .text()
            .await?;
        let value = |suffix: &str| {
            let key = format!("{name}_{suffix} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&key))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        Ok((value("sum"), value("count")))
    }
}

// ---------------------------------------------------------------------------------------------
// Part 1: ingest
// ---------------------------------------------------------------------------------------------

struct IngestResult {
    clients: usize,
    seconds: f64,
    samples: u64,
    requests: u64,
    failed: u64,
    p50_ms: f64,
    p99_ms: f64,
    body_bytes: usize,
    group_commits: f64,
    group_commit_busy_s: f64,
    requests_per_group: f64,
}

/// One request seen by a client: when it finished and how long it took.
struct Timed {
    done: Instant,
    latency: Duration,
    ok: bool,
}

async fn ingest_bench(clients: usize, measure: Duration) -> anyhow::Result<IngestResult> {
    let server = BenchServer::start().await?;
    let account = server.create_account("Bench ingest").await?;
    let url = format!(
        "{}/v2/accounts/{}/qss/telemetry",
        server.base, account.account_id
    );
    let body_bytes = batch_body(
        &(0..BATCH_SAMPLES).collect::<Vec<_>>(),
        &mut vec![0; PARTICIPANTS],
    )
    .len();

    let started = Instant::now();
    let measure_from = started + WARM_UP;
    let measure_to = measure_from + measure;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()?;
        let (url, key) = (url.clone(), account.ingest_key.clone());
        tasks.push(tokio::spawn(async move {
            // Each client owns the participants p with p % clients == c, so timestamps stay
            // unique per participant without coordination.
            let mine: Vec<usize> = (c..PARTICIPANTS).step_by(clients).collect();
            let mut last_ts = vec![0i64; PARTICIPANTS];
            let mut next = 0usize;
            let mut seen = Vec::new();
            while Instant::now() < measure_to {
                let picks: Vec<usize> = (0..BATCH_SAMPLES)
                    .map(|i| mine[(next + i) % mine.len()])
                    .collect();
                next = (next + BATCH_SAMPLES) % mine.len();
                let body = batch_body(&picks, &mut last_ts);
                let t0 = Instant::now();
                let r = http
                    .post(&url)
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                let ok = match r {
                    Ok(r) => {
                        let ok = r.status() == 202;
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
        }));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let (commit_s0, commits0) = server.histogram("qss_group_commit_seconds").await?;
    let (reqs0, _) = server.histogram("qss_group_commit_requests").await?;
    tokio::time::sleep_until(measure_to.into()).await;
    let (commit_s1, commits1) = server.histogram("qss_group_commit_seconds").await?;
    let (reqs1, _) = server.histogram("qss_group_commit_requests").await?;

    let mut latencies = Vec::new();
    let (mut requests, mut failed) = (0u64, 0u64);
    for t in tasks {
        for r in t.await? {
            if r.done < measure_from || r.done > measure_to {
                continue;
            }
            if r.ok {
                requests += 1;
                latencies.push(r.latency);
            } else {
                failed += 1;
            }
        }
    }
    server.stop().await?;
    let seconds = measure.as_secs_f64();
    let group_commits = commits1 - commits0;
    Ok(IngestResult {
        clients,
        seconds,
        samples: requests * BATCH_SAMPLES as u64,
        requests,
        failed,
        p50_ms: percentile_ms(&mut latencies, 50.0),
        p99_ms: percentile_ms(&mut latencies, 99.0),
        body_bytes,
        group_commits,
        group_commit_busy_s: commit_s1 - commit_s0,
        requests_per_group: if group_commits > 0.0 {
            (reqs1 - reqs0) / group_commits
        } else {
            0.0
        },
    })
}

/// A `{"samples": [...]}` body for these participants, timestamps `now` (strictly increasing
/// per participant).
fn batch_body(participants: &[usize], last_ts: &mut [i64]) -> String {
    let now = now_ms();
    let mut body = String::with_capacity(participants.len() * 450 + 16);
    body.push_str("{\"samples\":[");
    for (i, &p) in participants.iter().enumerate() {
        let ts = now.max(last_ts[p] + 1);
        last_ts[p] = ts;
        if i > 0 {
            body.push(',');
        }
        let wobble = (ts % 50) as f64 / 10.0;
        body.push_str(&format!(
            concat!(
                "{{\"kind\":\"participant_qos\",\"meeting_id\":\"bench-meeting-{m:03}\",",
                "\"meeting_type\":\"meeting\",\"participant_id\":\"bench-participant-{p:05}\",",
                "\"user_id\":\"user-{p:05}\",\"user_name\":\"Participant {p}\",",
                "\"timestamp\":\"{ts}\",\"metrics\":{{",
                "\"audio\":{{\"bitrate\":64.2,\"latency\":{al},\"jitter\":{aj},\"packet_loss\":0.4}},",
                "\"video\":{{\"bitrate\":1480,\"latency\":{vl},\"jitter\":{vj},\"packet_loss\":0.25,",
                "\"resolution\":\"1280x720\",\"frame_rate\":29.5}},\"cpu_usage\":{cpu}}}}}"
            ),
            m = p % MEETINGS,
            p = p,
            ts = iso(ts),
            al = 80.0 + wobble,
            aj = 6.0 + wobble,
            vl = 92.0 + wobble,
            vj = 9.0 + wobble,
            cpu = 30.0 + wobble,
        ));
    }
    body.push_str("]}");
    body
}

fn percentile_ms(v: &mut [Duration], pct: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    let rank = ((pct / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank - 1].as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------------------------
// Part 2: events pages over a million events
// ---------------------------------------------------------------------------------------------

struct PagesResult {
    events: usize,
    fill_seconds: f64,
    requests: usize,
    failed: usize,
    p50_ms: f64,
    p99_ms: f64,
    mean_page_len: f64,
}

async fn events_page_bench() -> anyhow::Result<PagesResult> {
    let server = BenchServer::start().await?;
    let mut accounts = Vec::new();
    for i in 0..EVENT_ACCOUNTS {
        accounts.push(server.create_account(&format!("Bench events {i}")).await?);
    }
    let token = server.token(&accounts[0]).await?;
    let ids: Vec<String> = accounts.iter().map(|a| a.account_id.clone()).collect();

    // Events in emission order (ascending event_ts), as the aggregation thread commits them,
    // spread over the day before `end`.
    let end = now_ms() - 5_000;
    let start = end - DAY_MS;
    let fill_started = Instant::now();
    let store = server.server.state.store.clone();
    let mut rng = rand::thread_rng();
    for chunk in 0..EVENTS_TOTAL / EVENTS_PER_COMMIT {
        let mut batch = WriteBatch::default();
        for j in 0..EVENTS_PER_COMMIT {
            let i = chunk * EVENTS_PER_COMMIT + j;
            let event_ts = start + (i as i64 * DAY_MS) / EVENTS_TOTAL as i64;
            batch.events.push(participant_event(
                &ids[i % ids.len()],
                i,
                event_ts,
                &mut rng,
            ));
        }
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.commit(&batch)).await??;
    }
    let fill_seconds = fill_started.elapsed().as_secs_f64();

    let mut latencies = Vec::with_capacity(PAGE_REQUESTS);
    let (mut failed, mut returned) = (0usize, 0usize);
    for _ in 0..PAGE_REQUESTS {
        let from = rng.gen_range(start..end - 60_000) / 1000 * 1000;
        let url = format!(
            "{}/v2/accounts/{}/qss/events?page_size=30&from={}",
            server.base,
            ids[0],
            qss_domain::timefmt::format_ms(from)
        );
        let t0 = Instant::now();
        let r = server.http.get(&url).bearer_auth(&token).send().await?;
        let ok = r.status() == 200;
        let body = r.bytes().await?;
        let latency = t0.elapsed();
        if ok {
            latencies.push(latency);
            let v: Value = serde_json::from_slice(&body)?;
            returned += v["events"].as_array().map_or(0, Vec::len);
        } else {
            failed += 1;
        }
    }
    server.stop().await?;
    let requests = latencies.len();
    Ok(PagesResult {
        events: EVENTS_TOTAL,
        fill_seconds,
        requests,
        failed,
        p50_ms: percentile_ms(&mut latencies, 50.0),
        p99_ms: percentile_ms(&mut latencies, 99.0),
        mean_page_len: returned as f64 / requests.max(1) as f64,
    })
}

/// A stored `qss.meeting_participant_qos` event of about 700 bytes, as the server writes it.
fn participant_event(account_id: &str, i: usize, event_ts: i64, rng: &mut impl Rng) -> NewEvent {
    let id = qss_domain::event::new_event_id(event_ts);
    let meeting = i / EVENT_ACCOUNTS % MEETINGS;
    let participant = i / EVENT_ACCOUNTS % PARTICIPANTS;
    // One instance per meeting and hour, named like the server's (time-ordered).
    let instance = format!(
        "mi_{:010}{:016x}",
        event_ts / 3_600_000,
        meeting as u64 * 0x9e37_79b9_7f4a_7c15
    );
    let window = (event_ts - 70_000).div_euclid(60_000) * 60_000;
    let meeting_id = format!("meeting-{meeting:03}");
    let participant_id = format!("participant-{participant:05}");
    let latency = rng.gen_range(20.0..200.0f64).round();
    let body = json!({
        "id": id, "event": "qss.meeting_participant_qos", "event_ts": event_ts,
        "payload": {"account_id": account_id, "object": {
            "meeting_id": meeting_id, "meeting_instance_id": instance, "meeting_type": "meeting",
            "participant_id": participant_id, "user_id": format!("user-{participant:05}"),
            "user_name": format!("Participant {participant}"),
            "timestamp": qss_domain::timefmt::format_ms(window), "interval_seconds": 60,
            "sample_count": 10,
            "metrics": {
                "audio": {"bitrate": 64.2, "latency": latency, "jitter": 7.5, "packet_loss": 0.4},
                "video": {"bitrate": 1480, "latency": latency + 12.0, "jitter": 10.25,
                          "packet_loss": 0.25, "resolution": "1280x720", "frame_rate": 29.5},
                "cpu_usage": 37.5},
            "quality": {"mos": 4.3, "r_factor": 88.41, "grade": "good", "issues": []}}}
    })
    .to_string();
    NewEvent {
        id,
        account_id: account_id.to_string(),
        event_type: "qss.meeting_participant_qos".to_string(),
        event_ts,
        meeting_id: Some(meeting_id.clone()),
        meeting_instance_id: Some(instance.clone()),
        participant_id: Some(participant_id.clone()),
        call_id: None,
        dedup_key: format!("w\u{1f}{instance}\u{1f}{participant_id}\u{1f}60\u{1f}{window}"),
        body,
    }
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

fn report(i: &IngestResult, p: &PagesResult) -> anyhow::Result<()> {
    let samples_per_s = i.samples as f64 / i.seconds;
    let requests_per_s = i.requests as f64 / i.seconds;
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| ingest clients | {} |", i.clients);
    println!(
        "| ingest batch | {BATCH_SAMPLES} samples, {} bytes |",
        i.body_bytes
    );
    println!("| ingest samples/s | {samples_per_s:.0} |");
    println!("| ingest requests/s | {requests_per_s:.0} |");
    println!("| ingest latency p50 | {:.2} ms |", i.p50_ms);
    println!("| ingest latency p99 | {:.2} ms |", i.p99_ms);
    println!("| ingest failed requests | {} |", i.failed);
    println!(
        "| group commits/s | {:.0} ({:.1} requests each) |",
        i.group_commits / i.seconds,
        i.requests_per_group
    );
    println!(
        "| aggregation thread busy in ingest_group (place + serialize + commit) | {:.0} % ({:.2} ms per group) |",
        100.0 * i.group_commit_busy_s / i.seconds,
        1000.0 * i.group_commit_busy_s / i.group_commits.max(1.0)
    );
    println!(
        "| events store fill | {} events in {:.1} s ({:.0} events/s) |",
        p.events,
        p.fill_seconds,
        p.events as f64 / p.fill_seconds
    );
    println!("| events page (page_size=30) p50 | {:.2} ms |", p.p50_ms);
    println!("| events page p99 | {:.2} ms |", p.p99_ms);
    println!(
        "| events pages | {} ok, {} failed, {:.1} events per page |",
        p.requests, p.failed, p.mean_page_len
    );

    let out = json!({
        "ingest": {
            "clients": i.clients, "seconds": i.seconds, "batch_samples": BATCH_SAMPLES,
            "batch_bytes": i.body_bytes, "samples": i.samples, "requests": i.requests,
            "failed": i.failed, "samples_per_s": samples_per_s, "requests_per_s": requests_per_s,
            "latency_p50_ms": i.p50_ms, "latency_p99_ms": i.p99_ms,
            "group_commits": i.group_commits, "requests_per_group": i.requests_per_group,
            "group_commit_busy_s": i.group_commit_busy_s,
        },
        "events_page": {
            "events": p.events, "fill_seconds": p.fill_seconds, "requests": p.requests,
            "failed": p.failed, "page_size": 30, "latency_p50_ms": p.p50_ms,
            "latency_p99_ms": p.p99_ms, "mean_page_len": p.mean_page_len,
        },
    });
    let path = target_dir().join("bench-ingest.json");
    std::fs::write(&path, serde_json::to_string_pretty(&out)?)?;
    println!("\nwritten to {}", path.display());
    Ok(())
}

/// The cargo target directory: benches run from `<target>/release/deps/`.
fn target_dir() -> std::path::PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| "target".into())
}
