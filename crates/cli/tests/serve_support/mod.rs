//! Shared by the tests that run the real `qss serve` binary as separate processes on the wall
//! clock (`cluster.rs`, `crash.rs`, `webhooks_durability.rs`): the processes (started, killed,
//! stopped), an account with 10 s windows, clients that spread their requests over several nodes
//! (paced, or as fast as the server answers), and the checks on the emitted windows.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const ADMIN_TOKEN: &str = "serve-test-admin-token-0123456789";
pub const PARTICIPANT_QOS: &str = "qss.meeting_participant_qos";
pub const MEETING_SUMMARY: &str = "qss.meeting_qos_summary";
pub const INTERVAL_S: i64 = 10;
pub const GRACE_S: i64 = 5;
/// Samples in each request of the ingesting clients.
pub const SAMPLES_PER_BATCH: usize = 20;

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// RFC 3339 with milliseconds, as clients send it.
pub fn iso(ms: i64) -> String {
    qss_domain::timefmt::format_ms_precise(ms)
}

/// A port that was free a moment ago (bound on port 0, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `--database` of a server on the SQLite file `<dir>/qss.db`.
pub fn sqlite_database(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("qss.db").display())
}

/// One `qss serve` process. Dropping it kills the process, so a failing test leaves nothing
/// running behind.
pub struct ServerProcess {
    pub child: Child,
    pub base: String,
    pub log: PathBuf,
}

impl ServerProcess {
    /// Starts `qss serve --database <database>` on a fresh port with `env` (on top of, and
    /// overriding, the admin token and info logs), and waits until `/healthz` answers.
    pub async fn start(
        dir: &Path,
        name: &str,
        database: &str,
        env: &[(&str, &str)],
    ) -> ServerProcess {
        let mut server = ServerProcess::spawn(dir, name, database, env);
        server.wait_healthy().await;
        server
    }

    /// Like [`ServerProcess::start`], but returns as soon as the process runs, for a test that
    /// expects it to exit by itself. Its output goes to `<dir>/<name>.log`.
    pub fn spawn(dir: &Path, name: &str, database: &str, env: &[(&str, &str)]) -> ServerProcess {
        let port = free_port();
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_qss"));
        command
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--database",
                database,
            ])
            .env("QSS_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("QSS_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        for (k, v) in env {
            command.env(k, v);
        }
        ServerProcess {
            child: command.spawn().unwrap(),
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
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

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no shutdown code runs.
    pub fn sigkill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits up to `limit` for the exit status.
    pub async fn sigterm(&mut self, limit: Duration) -> Option<ExitStatus> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM failed");
        self.wait_exit(limit).await
    }

    /// The exit status, once the process has exited; `None` if it still runs after `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Account {
    pub account_id: String,
    pub ingest_key: String,
    pub client_id: String,
    pub client_secret: String,
}

/// Creates a business account with the QSS add-on and sets 10 s windows with 5 s of grace.
pub async fn create_account(base: &str) -> Account {
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/admin/accounts"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "Process test", "plan": "business", "qss_addon": true}))
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
pub async fn access_token(base: &str, a: &Account) -> String {
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

/// What the clients saw.
#[derive(Default, Debug)]
pub struct Ingested {
    /// (participant_id, timestamp ms) of every sample answered 202.
    pub acknowledged: Vec<(String, i64)>,
    /// Samples of requests without a clear answer (connection cut, 503, any failure): stored
    /// or not.
    pub uncertain: Vec<(String, i64)>,
    /// Every answer other than 202, as `status: body` (or the transport error), except those
    /// that [`AtStop::ServerGoesDown`] expects.
    pub failures: Vec<String>,
    /// Answers 503 that lacked a `Retry-After` or whose body was not the SPEC's error object.
    pub bad_503s: Vec<String>,
    /// The last timestamp each meeting's participants used, by meeting id.
    pub last_ts: HashMap<String, i64>,
}

/// The nodes clients send to; a test removes a node before it kills it.
pub type Nodes = Arc<Mutex<Vec<String>>>;

/// What a failed request means once `stopping` is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtStop {
    /// The servers stay up when the clients are stopped: a failure then is a failure like any
    /// other.
    ServersStayUp,
    /// `stopping` is set just before the server is killed or stopped: a request failing after
    /// that is expected. The client stops there, and that request's samples are uncertain (a
    /// batch in flight at the kill may or may not be stored), not a failure.
    ServerGoesDown,
}

/// `clients` tasks, each with its own meeting of `participants` participants, posting a
/// 20-sample batch every `pace` (`Duration::ZERO`: as fast as the server answers) until
/// `stopping` is set, each request to the next node in turn: no two consecutive requests of a
/// client go to the same node when there are several. Each participant's timestamps are `now`,
/// strictly increasing, so no sample is a duplicate.
pub fn start_clients(
    nodes: &Nodes,
    account: &Account,
    clients: usize,
    participants: usize,
    pace: Duration,
    stopping: Arc<AtomicBool>,
    at_stop: AtStop,
) -> Vec<tokio::task::JoinHandle<Ingested>> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    (0..clients)
        .map(|c| {
            let (http, nodes, stopping) = (http.clone(), nodes.clone(), stopping.clone());
            let (account_id, key) = (account.account_id.clone(), account.ingest_key.clone());
            tokio::spawn(async move {
                let meeting = format!("m{c}");
                let people: Vec<String> = (0..participants).map(|p| format!("p{c}-{p}")).collect();
                let mut last_ts = vec![0i64; participants];
                let mut seen = Ingested::default();
                let mut turn = c;
                // tokio's interval panics on a zero period.
                let mut tick = (!pace.is_zero()).then(|| tokio::time::interval(pace));
                while !stopping.load(Ordering::SeqCst) {
                    if let Some(tick) = &mut tick {
                        tick.tick().await;
                    }
                    let base = {
                        let nodes = nodes.lock().unwrap();
                        turn += 1;
                        nodes[turn % nodes.len()].clone()
                    };
                    let now = now_ms();
                    let mut batch = Vec::with_capacity(SAMPLES_PER_BATCH);
                    let mut keys = Vec::with_capacity(SAMPLES_PER_BATCH);
                    for i in 0..SAMPLES_PER_BATCH {
                        let p = i % participants;
                        let ts = now.max(last_ts[p] + 1);
                        last_ts[p] = ts;
                        batch.push(sample(&meeting, &people[p], ts));
                        keys.push((people[p].clone(), ts));
                    }
                    let url = format!("{base}/v2/accounts/{account_id}/qss/telemetry");
                    let sent = http
                        .post(&url)
                        .bearer_auth(&key)
                        .json(&json!({ "samples": batch }))
                        .send()
                        .await;
                    let failure = match sent {
                        Ok(r) if r.status() == 202 => {
                            seen.acknowledged.extend(keys);
                            continue;
                        }
                        Ok(r) => {
                            let status = r.status();
                            let retry_after = r.headers().get("retry-after").cloned();
                            let body = r.text().await.unwrap_or_default();
                            if status == 503 && !is_clean_503(retry_after.is_some(), &body) {
                                seen.bad_503s.push(format!("{retry_after:?} {body}"));
                            }
                            format!("{status}: {body}")
                        }
                        Err(e) => e.to_string(),
                    };
                    seen.uncertain.extend(keys);
                    if at_stop == AtStop::ServerGoesDown && stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    seen.failures.push(failure);
                }
                let last = last_ts.into_iter().max().unwrap_or(0);
                seen.last_ts.insert(meeting, last);
                seen
            })
        })
        .collect()
}

/// A 503 as the SPEC has it: `Retry-After`, and `{"code", "message"}` that names no internals.
fn is_clean_503(retry_after: bool, body: &str) -> bool {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return false;
    };
    let message = v["message"].as_str().unwrap_or_default().to_lowercase();
    retry_after
        && v["code"].is_i64()
        && !["postgres", "sql", "connection", "tcp", "error:"]
            .iter()
            .any(|w| message.contains(w))
}

pub async fn join_clients(clients: Vec<tokio::task::JoinHandle<Ingested>>) -> Ingested {
    let mut all = Ingested::default();
    for c in clients {
        let seen = c.await.unwrap();
        all.acknowledged.extend(seen.acknowledged);
        all.uncertain.extend(seen.uncertain);
        all.failures.extend(seen.failures);
        all.bad_503s.extend(seen.bad_503s);
        all.last_ts.extend(seen.last_ts);
    }
    all
}

/// Ends every client's meeting (`meeting_ended` after its last sample), through `base`,
/// retrying until each is acknowledged.
pub async fn end_meetings(base: &str, account: &Account, ingested: &Ingested) {
    let http = reqwest::Client::new();
    for (meeting, last) in &ingested.last_ts {
        let body = json!({"samples": [{"kind": "meeting_ended", "meeting_id": meeting,
                                        "timestamp": iso(last + 1)}]});
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = http
                .post(format!(
                    "{base}/v2/accounts/{}/qss/telemetry",
                    account.account_id
                ))
                .bearer_auth(&account.ingest_key)
                .json(&body)
                .send()
                .await;
            if r.is_ok_and(|r| r.status() == 202) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "meeting_ended was never accepted"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// A realistic sample: audio, video and CPU.
pub fn sample(meeting_id: &str, participant_id: &str, ts: i64) -> Value {
    let jitter = (ts % 17) as f64;
    json!({
        "kind": "participant_qos", "meeting_id": meeting_id, "participant_id": participant_id,
        "user_name": "Process Tester", "timestamp": iso(ts),
        "metrics": {
            "audio": {"bitrate": 64, "latency": 80, "jitter": jitter, "packet_loss": 0.5},
            "video": {"bitrate": 1500, "latency": 90, "jitter": jitter, "packet_loss": 0.2,
                      "resolution": "1280x720", "frame_rate": 30},
            "cpu_usage": 35,
        },
    })
}

/// One emitted participant window.
#[derive(Debug, Clone)]
pub struct Window {
    pub instance_id: String,
    pub participant_id: String,
    pub start_ms: i64,
    pub interval_s: i64,
    pub sample_count: u64,
    pub event_ts: i64,
}

impl Window {
    /// When the window became due: end + grace.
    pub fn due_ms(&self) -> i64 {
        self.start_ms + (self.interval_s + GRACE_S) * 1000
    }
}

/// Every event of `event_type` visible now (all pages of the default range).
pub async fn events(base: &str, account: &Account, token: &str, event_type: &str) -> Vec<Value> {
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
pub async fn participant_windows(base: &str, account: &Account, token: &str) -> Vec<Window> {
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

/// Samples per (participant, window start).
pub fn per_window(samples: &[(String, i64)]) -> HashMap<(String, i64), u64> {
    let len = INTERVAL_S * 1000;
    let mut out: HashMap<(String, i64), u64> = HashMap::new();
    for (p, ts) in samples {
        *out.entry((p.clone(), ts.div_euclid(len) * len))
            .or_default() += 1;
    }
    out
}

/// Windows that lack an event, or whose events count fewer samples than were acknowledged for
/// them.
pub fn short_windows(
    acknowledged: &HashMap<(String, i64), u64>,
    windows: &[Window],
) -> Vec<String> {
    let mut counted: HashMap<(String, i64), u64> = HashMap::new();
    for w in windows {
        *counted
            .entry((w.participant_id.clone(), w.start_ms))
            .or_default() += w.sample_count;
    }
    let mut out: Vec<String> = acknowledged
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

/// Polls the events until every acknowledged sample is counted (or `limit` passes; the checks
/// that follow then say what is missing).
pub async fn wait_for_windows(
    base: &str,
    account: &Account,
    token: &str,
    acknowledged: &HashMap<(String, i64), u64>,
    limit: Duration,
) -> Vec<Window> {
    let deadline = Instant::now() + limit;
    loop {
        let windows = participant_windows(base, account, token).await;
        if short_windows(acknowledged, &windows).is_empty() || Instant::now() >= deadline {
            return windows;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every acknowledged sample counted exactly once: no window emitted twice, none short of
/// its acknowledged samples, none counting more than were sent for it (acknowledged plus
/// those whose request got no clear answer).
pub fn assert_counted_exactly_once(ingested: &Ingested, windows: &[Window]) {
    let acknowledged = per_window(&ingested.acknowledged);
    let uncertain = per_window(&ingested.uncertain);
    let short = short_windows(&acknowledged, windows);
    assert!(
        short.is_empty(),
        "windows short of acknowledged samples: {short:?}"
    );
    let mut keys = HashSet::new();
    for w in windows {
        let key = (&w.instance_id, &w.participant_id, w.start_ms, w.interval_s);
        assert!(keys.insert(key), "window emitted twice: {w:?}");
        assert_eq!(w.interval_s, INTERVAL_S, "{w:?}");
        let k = (w.participant_id.clone(), w.start_ms);
        let sent =
            acknowledged.get(&k).copied().unwrap_or(0) + uncertain.get(&k).copied().unwrap_or(0);
        assert!(
            w.sample_count <= sent,
            "window counts {} samples, {sent} were sent: {w:?}",
            w.sample_count
        );
    }
}

/// Meeting ids of the summaries visible now, with how many summaries each has.
pub async fn summaries(base: &str, account: &Account, token: &str) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for e in events(base, account, token, MEETING_SUMMARY).await {
        let m = e["payload"]["object"]["meeting_id"]
            .as_str()
            .unwrap()
            .to_string();
        *out.entry(m).or_default() += 1;
    }
    out
}
