//! Crash safety of the real `qss serve` binary on a real SQLite file (SPEC 4, 5.2, 8, 10).
//!
//! Unlike `api.rs`, these tests run the server as a separate process on the wall clock, so
//! that it can be killed with SIGKILL or stopped with SIGTERM while clients are posting. The
//! account aggregates over 10 s windows with 5 s of grace, which keeps every test under about
//! 40 s of real time while still leaving windows open at the moment the server dies.
//!
//! What they show: a 202 means durable (every acknowledged sample is counted in an event after
//! the restart), open windows are finished by the next process, and no participant window is
//! emitted twice; a graceful stop exits 0 and leaves its open windows to the next start; a
//! second server on the same database refuses to start.
//!
//! SQLite only, whatever `QSS_TEST_DATABASE` says: these tests are about one process owning a
//! SQLite file (its exclusive lock refuses a second server; its recovery on restart). On
//! PostgreSQL several servers share a database by design, and killing nodes and stopping the
//! database are tested in `cluster.rs`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ADMIN_TOKEN: &str = "crash-test-admin-token-0123456789";
const PARTICIPANT_QOS: &str = "qss.meeting_participant_qos";
const MEETING_SUMMARY: &str = "qss.meeting_qos_summary";
const PHONE_CALL_QOS: &str = "qss.phone_call_qos";
const INTERVAL_S: i64 = 10;
const GRACE_S: i64 = 5;
const CLIENTS: usize = 4;
const PARTICIPANTS_PER_CLIENT: usize = 5;
const SAMPLES_PER_BATCH: usize = 20;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// RFC 3339 with milliseconds, as clients send it.
fn iso(ms: i64) -> String {
    qss_domain::timefmt::format_ms_precise(ms)
}

/// A port that was free a moment ago (bound on port 0, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---------------------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------------------

/// One `qss serve` process. Dropping it kills the process, so a failing test leaves nothing
/// running behind.
struct ServerProcess {
    child: Child,
    base: String,
    log: PathBuf,
}

impl ServerProcess {
    /// Starts `qss serve` on `db` and a fresh port, and waits until `/healthz` answers.
    async fn start(dir: &Path, name: &str) -> ServerProcess {
        let port = free_port();
        let (child, log) = spawn_serve(dir, name, port);
        let mut server = ServerProcess {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        server.wait_healthy().await;
        server
    }

    async fn wait_healthy(&mut self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("qss serve exited with {status}:\n{}", self.log_text());
            }
            let r = client
                .get(format!("{}/healthz", self.base))
                .timeout(Duration::from_millis(500))
                .send()
                .await;
            if r.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "qss serve did not answer /healthz in time:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no shutdown code runs.
    fn sigkill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits up to `limit` for the exit status.
    async fn sigterm(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM failed");
        wait_exit(&mut self.child, limit).await
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `qss serve --listen 127.0.0.1:<port> --database sqlite://<dir>/qss.db`, its output in
/// `<dir>/<name>.log`.
fn spawn_serve(dir: &Path, name: &str, port: u16) -> (Child, PathBuf) {
    let log = dir.join(format!("{name}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_qss"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database",
            &format!("sqlite://{}", dir.join("qss.db").display()),
        ])
        .env("QSS_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("QSS_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    (child, log)
}

async fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The account
// ---------------------------------------------------------------------------------------------

struct Account {
    account_id: String,
    ingest_key: String,
    client_id: String,
    client_secret: String,
}

/// Creates a business account with the QSS add-on and sets 10 s windows with 5 s of grace.
async fn create_account(base: &str) -> Account {
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/admin/accounts"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "Crash test", "plan": "business", "qss_addon": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    let account = Account {
        account_id: v["account_id"].as_str().unwrap().to_string(),
        ingest_key: v["ingest_key"]["ingest_key"].as_str().unwrap().to_string(),
        client_id: v["credentials"]["client_id"].as_str().unwrap().to_string(),
        client_secret: v["credentials"]["client_secret"]
            .as_str()
            .unwrap()
            .to_string(),
    };
    let token = access_token(base, &account).await;
    let r = http
        .patch(format!(
            "{base}/v2/accounts/{}/qss/settings",
            account.account_id
        ))
        .bearer_auth(&token)
        .json(&json!({
            "aggregation_interval_seconds": INTERVAL_S,
            "aggregation_grace_seconds": GRACE_S,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    account
}

/// A bearer token (qss:read qss:write) from the account's credentials.
async fn access_token(base: &str, a: &Account) -> String {
    let r = reqwest::Client::new()
        .post(format!(
            "{base}/oauth/token?grant_type=account_credentials&account_id={}",
            a.account_id
        ))
        .basic_auth(&a.client_id, Some(&a.client_secret))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["access_token"].as_str().unwrap().to_string()
}

// ---------------------------------------------------------------------------------------------
// Ingesting clients
// ---------------------------------------------------------------------------------------------

/// What the clients saw: every sample answered with 202, and anything that failed while the
/// server was supposed to be up.
#[derive(Default)]
struct Ingested {
    /// (participant_id, timestamp ms) of every acknowledged sample.
    acknowledged: Vec<(String, i64)>,
    unexpected_failures: Vec<String>,
}

/// Runs `CLIENTS` tasks posting 20-sample batches as fast as the server answers, until
/// `stopping` is set. Each client has its own meeting and participants; each participant's
/// timestamps are `now`, strictly increasing, so no sample is a duplicate.
fn start_clients(
    base: &str,
    account: &Account,
    stopping: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Ingested>> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    (0..CLIENTS)
        .map(|c| {
            let url = format!("{base}/v2/accounts/{}/qss/telemetry", account.account_id);
            let (http, key, stopping) =
                (http.clone(), account.ingest_key.clone(), stopping.clone());
            tokio::spawn(async move {
                let participants: Vec<String> = (0..PARTICIPANTS_PER_CLIENT)
                    .map(|p| format!("crash-p{c}-{p}"))
                    .collect();
                let mut last_ts = [0i64; PARTICIPANTS_PER_CLIENT];
                let mut seen = Ingested::default();
                while !stopping.load(Ordering::SeqCst) {
                    let now = now_ms();
                    let mut batch = Vec::with_capacity(SAMPLES_PER_BATCH);
                    let mut keys = Vec::with_capacity(SAMPLES_PER_BATCH);
                    for i in 0..SAMPLES_PER_BATCH {
                        let p = i % PARTICIPANTS_PER_CLIENT;
                        let ts = now.max(last_ts[p] + 1);
                        last_ts[p] = ts;
                        batch.push(sample(&format!("crash-m{c}"), &participants[p], ts));
                        keys.push((participants[p].clone(), ts));
                    }
                    let sent = http
                        .post(&url)
                        .bearer_auth(&key)
                        .json(&json!({ "samples": batch }))
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == 202 => seen.acknowledged.extend(keys),
                        // Failures are expected once the server is being stopped; the
                        // samples of a failed request may or may not be stored.
                        _ if stopping.load(Ordering::SeqCst) => break,
                        Ok(r) => seen.unexpected_failures.push(format!(
                            "{}: {}",
                            r.status(),
                            r.text().await.unwrap_or_default()
                        )),
                        Err(e) => seen.unexpected_failures.push(e.to_string()),
                    }
                }
                seen
            })
        })
        .collect()
}

async fn join_clients(clients: Vec<tokio::task::JoinHandle<Ingested>>) -> Ingested {
    let mut all = Ingested::default();
    for c in clients {
        let seen = c.await.unwrap();
        all.acknowledged.extend(seen.acknowledged);
        all.unexpected_failures.extend(seen.unexpected_failures);
    }
    all
}

/// A realistic sample: audio, video and CPU.
fn sample(meeting_id: &str, participant_id: &str, ts: i64) -> Value {
    let jitter = (ts % 17) as f64;
    json!({
        "kind": "participant_qos", "meeting_id": meeting_id, "participant_id": participant_id,
        "user_name": "Crash Tester", "timestamp": iso(ts),
        "metrics": {
            "audio": {"bitrate": 64, "latency": 80, "jitter": jitter, "packet_loss": 0.5},
            "video": {"bitrate": 1500, "latency": 90, "jitter": jitter, "packet_loss": 0.2,
                      "resolution": "1280x720", "frame_rate": 30},
            "cpu_usage": 35,
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Reading and checking events
// ---------------------------------------------------------------------------------------------

/// One emitted participant window.
#[derive(Debug, Clone)]
struct Window {
    instance_id: String,
    participant_id: String,
    start_ms: i64,
    interval_s: i64,
    sample_count: u64,
    event_ts: i64,
}

impl Window {
    /// When the window became due: end + grace.
    fn due_ms(&self) -> i64 {
        self.start_ms + (self.interval_s + GRACE_S) * 1000
    }
}

/// Every event of `event_type` visible now (all pages of the default range).
async fn events(base: &str, account: &Account, token: &str, event_type: &str) -> Vec<Value> {
    let http = reqwest::Client::new();
    let mut out = Vec::new();
    let mut next = String::new();
    loop {
        let r = http
            .get(format!(
                "{base}/v2/accounts/{}/qss/events?page_size=300&event={event_type}&next_page_token={next}",
                account.account_id
            ))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        out.extend(v["events"].as_array().unwrap().iter().cloned());
        next = v["next_page_token"].as_str().unwrap().to_string();
        if next.is_empty() {
            return out;
        }
    }
}

/// Every participant window of the account visible now.
async fn participant_windows(base: &str, account: &Account, token: &str) -> Vec<Window> {
    let mut out = Vec::new();
    for e in events(base, account, token, PARTICIPANT_QOS).await {
        let o = &e["payload"]["object"];
        out.push(Window {
            instance_id: o["meeting_instance_id"].as_str().unwrap().to_string(),
            participant_id: o["participant_id"].as_str().unwrap().to_string(),
            start_ms: qss_domain::timefmt::parse_datetime(o["timestamp"].as_str().unwrap())
                .unwrap(),
            interval_s: o["interval_seconds"].as_i64().unwrap(),
            sample_count: o["sample_count"].as_u64().unwrap(),
            event_ts: e["event_ts"].as_i64().unwrap(),
        });
    }
    out
}

/// Acknowledged samples per (participant, window start).
fn expected_windows(acknowledged: &[(String, i64)]) -> HashMap<(String, i64), u64> {
    let len = INTERVAL_S * 1000;
    let mut out: HashMap<(String, i64), u64> = HashMap::new();
    for (p, ts) in acknowledged {
        *out.entry((p.clone(), ts.div_euclid(len) * len))
            .or_default() += 1;
    }
    out
}

/// Participant windows that lack an event, or whose event counts fewer samples than were
/// acknowledged for it.
fn missing(expected: &HashMap<(String, i64), u64>, windows: &[Window]) -> Vec<String> {
    let mut counted: HashMap<(String, i64), u64> = HashMap::new();
    for w in windows {
        *counted
            .entry((w.participant_id.clone(), w.start_ms))
            .or_default() += w.sample_count;
    }
    let mut out: Vec<String> = expected
        .iter()
        .filter(|(k, n)| counted.get(*k).copied().unwrap_or(0) < **n)
        .map(|((p, start), n)| {
            format!(
                "{p} @ {}: {n} acknowledged, {} counted",
                iso(*start),
                counted.get(&(p.clone(), *start)).copied().unwrap_or(0)
            )
        })
        .collect();
    out.sort();
    out
}

/// Polls the events until every acknowledged sample is counted (or `limit` passes; then the
/// checks that follow report what is missing).
async fn wait_for_windows(
    base: &str,
    account: &Account,
    token: &str,
    expected: &HashMap<(String, i64), u64>,
    limit: Duration,
) -> Vec<Window> {
    let deadline = Instant::now() + limit;
    loop {
        let windows = participant_windows(base, account, token).await;
        if missing(expected, &windows).is_empty() || Instant::now() >= deadline {
            return windows;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// When the first server stopped and the second one started and became ready (epoch ms).
struct Restart {
    stopped_ms: i64,
    started_ms: i64,
    ready_ms: i64,
}

/// The checks both restart tests share: every acknowledged sample counted, no window twice,
/// no window emitted before end + grace, and every window still open when the first process
/// stopped emitted by the second one.
fn assert_restart_invariants(ingested: &Ingested, windows: &[Window], restart: &Restart) {
    assert!(
        ingested.unexpected_failures.is_empty(),
        "requests failed while the server was up: {:?}",
        &ingested.unexpected_failures[..ingested.unexpected_failures.len().min(5)]
    );
    let acknowledged = ingested.acknowledged.len() as u64;
    assert!(acknowledged > 0, "no batch was acknowledged");

    let counted: u64 = windows.iter().map(|w| w.sample_count).sum();
    let expected = expected_windows(&ingested.acknowledged);
    let missing = missing(&expected, windows);
    assert!(
        missing.is_empty() && counted >= acknowledged,
        "{acknowledged} samples acknowledged, {counted} counted; short windows: {missing:?}"
    );

    let mut keys = HashSet::new();
    for w in windows {
        let key = (&w.instance_id, &w.participant_id, w.start_ms, w.interval_s);
        assert!(keys.insert(key), "window emitted twice: {w:?}");
        assert_eq!(w.interval_s, INTERVAL_S, "{w:?}");
        assert!(
            w.event_ts >= w.due_ms(),
            "window emitted before end + grace: {w:?}"
        );
        // SPEC 5.2: committed within 2 s after end + grace, or after the restart for windows
        // that fell due while no server ran (one more second for a loaded machine).
        assert!(
            w.event_ts <= w.due_ms().max(restart.ready_ms) + 3000,
            "window emitted late: {w:?} (second server ready at {})",
            restart.ready_ms
        );
    }

    // Windows not yet due when the first process stopped cannot have been emitted by it.
    let open_at_stop: Vec<&Window> = windows
        .iter()
        .filter(|w| w.due_ms() > restart.stopped_ms)
        .collect();
    assert!(
        !open_at_stop.is_empty(),
        "no window was open when the server stopped (stopped at {}, windows {windows:?})",
        iso(restart.stopped_ms)
    );
    for w in open_at_stop {
        assert!(
            w.event_ts >= restart.started_ms,
            "window open at the stop was emitted before the restart: {w:?}"
        );
    }
}

/// How long after the restart the last window can take to show in the events API: a whole
/// window, the grace, the emission tick and the 2 s visibility delay, with room for a slow
/// machine.
fn emission_wait() -> Duration {
    Duration::from_secs((INTERVAL_S + GRACE_S) as u64 + 10)
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_sample_survives_a_sigkill_and_open_windows_are_emitted_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = ServerProcess::start(dir.path(), "first").await;
    let account = create_account(&first.base).await;

    // Clients post until the kill; a batch in flight at that moment fails and is not counted.
    let stopping = Arc::new(AtomicBool::new(false));
    let clients = start_clients(&first.base, &account, stopping.clone());
    tokio::time::sleep(Duration::from_secs(4)).await;
    stopping.store(true, Ordering::SeqCst);
    let killed_ms = now_ms();
    first.sigkill();
    let ingested = join_clients(clients).await;
    let first_log = first.log_text();
    drop(first);

    let started_ms = now_ms();
    let second = ServerProcess::start(dir.path(), "second").await;
    let ready_ms = now_ms();
    let token = access_token(&second.base, &account).await;
    let expected = expected_windows(&ingested.acknowledged);
    let windows =
        wait_for_windows(&second.base, &account, &token, &expected, emission_wait()).await;

    eprintln!(
        "sigkill: {} samples acknowledged in {} windows; {} windows emitted, {} samples counted",
        ingested.acknowledged.len(),
        expected.len(),
        windows.len(),
        windows.iter().map(|w| w.sample_count).sum::<u64>()
    );
    if !missing(&expected, &windows).is_empty() {
        eprintln!(
            "first server log:\n{first_log}\nsecond server log:\n{}",
            second.log_text()
        );
    }
    let restart = Restart {
        stopped_ms: killed_ms,
        started_ms,
        ready_ms,
    };
    assert_restart_invariants(&ingested, &windows, &restart);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_exits_zero_and_the_next_start_emits_the_open_windows_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = ServerProcess::start(dir.path(), "first").await;
    let account = create_account(&first.base).await;

    // Clients post until the signal; the requests in flight then must finish (a 202 is
    // counted, anything else is not).
    let stopping = Arc::new(AtomicBool::new(false));
    let clients = start_clients(&first.base, &account, stopping.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    stopping.store(true, Ordering::SeqCst);
    let stopped_at = Instant::now();
    let status = first.sigterm(Duration::from_secs(8)).await;
    let stopped_ms = now_ms();
    let ingested = join_clients(clients).await;
    let Some(status) = status else {
        panic!(
            "qss serve did not exit within 8 s of SIGTERM:\n{}",
            first.log_text()
        );
    };
    assert!(
        status.success(),
        "qss serve exited with {status} after SIGTERM:\n{}",
        first.log_text()
    );
    eprintln!(
        "sigterm: exited 0 in {} ms",
        stopped_at.elapsed().as_millis()
    );
    drop(first);

    let started_ms = now_ms();
    let second = ServerProcess::start(dir.path(), "second").await;
    let ready_ms = now_ms();
    let token = access_token(&second.base, &account).await;
    let expected = expected_windows(&ingested.acknowledged);
    let windows =
        wait_for_windows(&second.base, &account, &token, &expected, emission_wait()).await;
    eprintln!(
        "sigterm: {} samples acknowledged; {} windows emitted, {} samples counted",
        ingested.acknowledged.len(),
        windows.len(),
        windows.iter().map(|w| w.sample_count).sum::<u64>()
    );
    let restart = Restart {
        stopped_ms,
        started_ms,
        ready_ms,
    };
    assert_restart_invariants(&ingested, &windows, &restart);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_database_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let _first = ServerProcess::start(dir.path(), "first").await;

    let (mut second, log) = spawn_serve(dir.path(), "second", free_port());
    let status = wait_exit(&mut second, Duration::from_secs(20)).await;
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    let Some(status) = status else {
        let _ = second.kill();
        let _ = second.wait();
        panic!("a second qss serve on the same database kept running:\n{output}");
    };
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(
        output.to_lowercase().contains("lock"),
        "the reason should mention the lock: {output}"
    );
}

/// Posts one batch and returns the 202 body.
async fn post(base: &str, account: &Account, samples: Value) -> Value {
    let r = reqwest::Client::new()
        .post(format!(
            "{base}/v2/accounts/{}/qss/telemetry",
            account.account_id
        ))
        .bearer_auth(&account.ingest_key)
        .json(&json!({ "samples": samples }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
    r.json().await.unwrap()
}

/// Polls the events of `event_type` until there are at least `n` (at most 10 s).
async fn wait_for_count(
    base: &str,
    account: &Account,
    token: &str,
    event_type: &str,
    n: usize,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = events(base, account, token, event_type).await;
        if found.len() >= n || Instant::now() >= deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The start of a 10 s window a minute ago: samples in it are accepted, and it is already
/// past end + grace, so its events are emitted as soon as the samples are committed.
fn closed_window_start() -> i64 {
    let len = INTERVAL_S * 1000;
    (now_ms() - 60_000).div_euclid(len) * len
}

/// Stops `server` with SIGTERM (it must exit 0) and starts another on the same database.
async fn restart(dir: &Path, mut server: ServerProcess, name: &str) -> ServerProcess {
    let status = server.sigterm(Duration::from_secs(8)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "qss serve did not exit 0 after SIGTERM ({status:?}):\n{}",
        server.log_text()
    );
    drop(server);
    ServerProcess::start(dir, name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_sample_of_an_ended_meeting_counts_nowhere_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = ServerProcess::start(dir.path(), "first").await;
    let account = create_account(&first.base).await;
    let token = access_token(&first.base, &account).await;

    // A meeting with one sample, ended in the same (already closed) window: its participant
    // window and its summary are emitted at once.
    let t1 = closed_window_start() + 1000;
    let s = sample("ended-m", "ended-p", t1);
    let ended =
        json!({"kind": "meeting_ended", "meeting_id": "ended-m", "timestamp": iso(t1 + 1000)});
    post(&first.base, &account, json!([s.clone(), ended])).await;
    let summaries = wait_for_count(&first.base, &account, &token, MEETING_SUMMARY, 1).await;
    assert_eq!(summaries.len(), 1);
    assert_eq!(
        participant_windows(&first.base, &account, &token)
            .await
            .len(),
        1
    );

    // After a restart, a client resends the sample (it never saw the first 202).
    let second = restart(dir.path(), first, "second").await;
    post(&second.base, &account, json!([s])).await;
    // A new window would be emitted within 2 s of the 202 and be visible 2 s later.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let windows = participant_windows(&second.base, &account, &token).await;
    let summaries = events(&second.base, &account, &token, MEETING_SUMMARY).await;
    assert_eq!(
        windows.len(),
        1,
        "the participant window was emitted again: {windows:?}"
    );
    assert_eq!(summaries.len(), 1, "the meeting was summarised again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_call_after_a_restart_is_emitted_in_the_window_of_an_ended_one() {
    let dir = tempfile::tempdir().unwrap();
    let first = ServerProcess::start(dir.path(), "first").await;
    let account = create_account(&first.base).await;
    let token = access_token(&first.base, &account).await;

    let call = |ts: i64| {
        json!({"kind": "call_qos", "call_id": "c1", "direction": "inbound", "timestamp": iso(ts),
               "metrics": {"bitrate": 64, "latency": 80, "jitter": 5, "packet_loss": 0.5}})
    };
    // A call ended within a closed window: its event is emitted at once.
    let w = closed_window_start();
    let ended = json!({"kind": "call_ended", "call_id": "c1", "direction": "inbound", "timestamp": iso(w + 2000)});
    post(&first.base, &account, json!([call(w + 1000), ended])).await;
    let phone = wait_for_count(&first.base, &account, &token, PHONE_CALL_QOS, 1).await;
    assert_eq!(phone.len(), 1);

    // After a restart, a later sample of the same call id and direction starts a new call
    // (SPEC 4 `call_ended`), in the same window: it is a window of its own.
    let second = restart(dir.path(), first, "second").await;
    post(&second.base, &account, json!([call(w + 3000)])).await;
    let phone = wait_for_count(&second.base, &account, &token, PHONE_CALL_QOS, 2).await;
    assert_eq!(
        phone.len(),
        2,
        "the acknowledged sample of the new call is in no event: {phone:?}"
    );
}
