//! What every part of the suite shares: an in-process server, accounts, the sample bodies the
//! clients send, and latency statistics.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub const ADMIN_TOKEN: &str = "bench-admin-token-0123456789abcdef";
pub const RECEIVER_SECRET: &str = "bench-receiver-secret-0123456789";

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub fn iso(ms: i64) -> String {
    qss_domain::timefmt::format_ms_precise(ms)
}

/// A whole qss server in this process: SQLite file in a temporary folder (or a node on a
/// PostgreSQL database), the system clock, private networks allowed so that it may deliver to
/// a receiver on 127.0.0.1.
pub struct BenchServer {
    pub base: String,
    pub http: reqwest::Client,
    pub server: qss_server::Server,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

pub struct BenchAccount {
    pub account_id: String,
    pub ingest_key: String,
    pub token: String,
}

impl BenchServer {
    /// A server on a fresh SQLite file.
    pub async fn start() -> anyhow::Result<BenchServer> {
        BenchServer::start_on(None).await
    }

    /// A server on `database` (a `postgres://` URL; several may share one), or on a fresh
    /// SQLite file when `None`.
    pub async fn start_on(database: Option<&str>) -> anyhow::Result<BenchServer> {
        let dir = tempfile::tempdir()?;
        let database = match database {
            Some(url) => url.to_string(),
            None => format!("sqlite://{}", dir.path().join("qss.db").display()),
        };
        let overrides = vec![
            ("database".to_string(), database),
            ("admin_token".to_string(), ADMIN_TOKEN.to_string()),
            (
                "webhook.allow_private_networks".to_string(),
                "true".to_string(),
            ),
            // The benchmarks measure capacity: one account sends far more than a tenant may.
            ("rate_limit.ingest".to_string(), "0".to_string()),
            ("rate_limit.heavy".to_string(), "0".to_string()),
            ("rate_limit.light".to_string(), "0".to_string()),
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
            server,
            shutdown,
            _dir: dir,
        })
    }

    /// The server's SQLite store, for the benches' bulk fills.
    pub fn sqlite(&self) -> &Arc<qss_store::SqliteStore> {
        self.server
            .state
            .store
            .as_sqlite()
            .expect("the bench server runs on SQLite")
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.server.wait().await
    }

    /// A business account with the QSS add-on, its ingest key and an access token.
    pub async fn create_account(&self, name: &str) -> anyhow::Result<BenchAccount> {
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
        let account_id = s("/account_id");
        let r = self
            .http
            .post(format!(
                "{}/oauth/token?grant_type=account_credentials&account_id={account_id}",
                self.base
            ))
            .basic_auth(
                s("/credentials/client_id"),
                Some(s("/credentials/client_secret")),
            )
            .send()
            .await?;
        anyhow::ensure!(r.status() == 200, "token: {}", r.status());
        let t: Value = r.json().await?;
        Ok(BenchAccount {
            account_id,
            ingest_key: s("/ingest_key/ingest_key"),
            token: t["access_token"].as_str().unwrap_or("").to_string(),
        })
    }

    /// PATCHes the account's QSS settings.
    pub async fn patch_settings(&self, a: &BenchAccount, patch: Value) -> anyhow::Result<()> {
        let r = self
            .http
            .patch(format!(
                "{}/v2/accounts/{}/qss/settings",
                self.base, a.account_id
            ))
            .bearer_auth(&a.token)
            .json(&patch)
            .send()
            .await?;
        anyhow::ensure!(r.status() == 204, "settings: {}", r.text().await?);
        Ok(())
    }

    /// Subscribes `url` to `events` (with the handshake).
    pub async fn subscribe(
        &self,
        a: &BenchAccount,
        url: &str,
        events: &[&str],
    ) -> anyhow::Result<()> {
        let r = self
            .http
            .post(format!(
                "{}/v2/accounts/{}/qss/webhooks",
                self.base, a.account_id
            ))
            .bearer_auth(&a.token)
            .json(&json!({"url": url, "events": events, "secret_token": RECEIVER_SECRET}))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 201, "subscribing: {}", r.text().await?);
        Ok(())
    }

    pub fn telemetry_url(&self, a: &BenchAccount) -> String {
        format!("{}/v2/accounts/{}/qss/telemetry", self.base, a.account_id)
    }

    /// `(sum, count)` of a Prometheus histogram from `/metrics`.
    pub async fn histogram(&self, name: &str) -> anyhow::Result<(f64, f64)> {
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

/// The body of one `participant_qos` sample as the simulated clients send it: audio, video and
/// CPU, about 430 bytes.
pub fn sample_json(meeting: usize, participant: usize, ts: i64) -> String {
    let mut out = String::with_capacity(450);
    push_sample(&mut out, meeting, participant, ts, &iso(ts));
    out
}

/// Appends [`sample_json`] to `out`, with `ts` already formatted (the clients are on the same
/// two cores as the server, so they format each timestamp once per batch, not per sample).
fn push_sample(out: &mut String, meeting: usize, participant: usize, ts: i64, ts_iso: &str) {
    use std::fmt::Write;
    let wobble = (ts % 50) as f64 / 10.0;
    let _ = write!(
        out,
        concat!(
            "{{\"kind\":\"participant_qos\",\"meeting_id\":\"bench-meeting-{m:03}\",",
            "\"meeting_type\":\"meeting\",\"participant_id\":\"bench-participant-{p:06}\",",
            "\"user_id\":\"user-{p:06}\",\"user_name\":\"Participant {p}\",",
            "\"timestamp\":\"{ts}\",\"metrics\":{{",
            "\"audio\":{{\"bitrate\":64.2,\"latency\":{al},\"jitter\":{aj},\"packet_loss\":0.4}},",
            "\"video\":{{\"bitrate\":1480,\"latency\":{vl},\"jitter\":{vj},\"packet_loss\":0.25,",
            "\"resolution\":\"1280x720\",\"frame_rate\":29.5}},\"cpu_usage\":{cpu}}}}}"
        ),
        m = meeting,
        p = participant,
        ts = ts_iso,
        al = 80.0 + wobble,
        aj = 6.0 + wobble,
        vl = 92.0 + wobble,
        vj = 9.0 + wobble,
        cpu = 30.0 + wobble,
    );
}

/// A `{"samples": [...]}` body for `participants` (meeting = participant / 100), timestamps
/// `now` made strictly increasing per participant through `last_ts`.
pub fn batch_body(participants: &[usize], last_ts: &mut [i64]) -> String {
    let now = now_ms();
    let mut body = String::with_capacity(participants.len() * 450 + 16);
    body.push_str("{\"samples\":[");
    let mut formatted = (i64::MIN, String::new());
    for (i, &p) in participants.iter().enumerate() {
        let ts = now.max(last_ts[p] + 1);
        last_ts[p] = ts;
        if i > 0 {
            body.push(',');
        }
        if formatted.0 != ts {
            formatted = (ts, iso(ts));
        }
        push_sample(&mut body, p / 100, p, ts, &formatted.1);
    }
    body.push_str("]}");
    body
}

/// Latency percentiles (nearest rank) in milliseconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Latency {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of_ms(mut v: Vec<f64>) -> Latency {
        v.sort_unstable_by(f64::total_cmp);
        let at = |pct: f64| {
            if v.is_empty() {
                return 0.0;
            }
            let rank = ((pct / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
            v[rank - 1]
        };
        Latency {
            count: v.len(),
            p50_ms: at(50.0),
            p99_ms: at(99.0),
            max_ms: v.last().copied().unwrap_or(0.0),
        }
    }

    pub fn of(v: &[Duration]) -> Latency {
        Latency::of_ms(v.iter().map(|d| d.as_secs_f64() * 1000.0).collect())
    }
}

/// `VmRSS` / `VmHWM` of this process, KiB.
pub fn proc_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
