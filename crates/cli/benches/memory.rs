//! Resident memory with many concurrently reporting participants:
//! `cargo bench -p qss --bench memory` (`QSS_BENCH_PARTICIPANTS`, default "10000,100000").
//!
//! For each size: a fresh in-process server (SQLite file, system clock), participants spread
//! over meetings of 100, each sending one sample every 5 s for one minute (12 rounds, sent as
//! fast as the server takes them, timestamps 5 s apart, in the next minute). Reports the
//! process's resident set (VmRSS, and the peak VmHWM) after the rounds, with all windows and
//! instances open. The figure includes the benchmark's own client; the baseline row is the
//! process before the server starts.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const ADMIN: &str = "bench-admin-token-0123456789abcdef";
const ROUNDS: i64 = 12;
const BATCH: usize = 1000;

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn iso(ms: i64) -> String {
    qss_domain::timefmt::format_ms_precise(ms)
}

fn main() -> anyhow::Result<()> {
    let sizes: Vec<usize> = std::env::var("QSS_BENCH_PARTICIPANTS")
        .unwrap_or_else(|_| "10000,100000".to_string())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!("| participants | samples | VmRSS | VmHWM |\n|---|---|---|---|");
    println!(
        "| (baseline) | 0 | {} MiB | {} MiB |",
        rss_kib("VmRSS:") / 1024,
        rss_kib("VmHWM:") / 1024
    );
    for n in sizes {
        rt.block_on(run(n))?;
    }
    Ok(())
}

async fn run(participants: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let overrides = vec![
        (
            "database".to_string(),
            format!("sqlite://{}", dir.path().join("qss.db").display()),
        ),
        ("admin_token".to_string(), ADMIN.to_string()),
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
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::new();
    let a: Value = http
        .post(format!("{base}/admin/accounts"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "bench", "plan": "business", "qss_addon": true}))
        .send()
        .await?
        .json()
        .await?;
    let account = a["account_id"].as_str().unwrap_or_default().to_string();
    let key = a["ingest_key"]["ingest_key"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let url = format!("{base}/v2/accounts/{account}/qss/telemetry");
    // Timestamps in the next minute's window (at most 115 s ahead, within the 300 s of allowed
    // skew), so that it is due at least 70 s from now and every window is still open when VmRSS
    // is read. Timestamps a minute back made the figure depend on the wall clock: a run crossing
    // the window's due time measured the burst of 100k events being emitted, one starting after
    // it measured windows emitted as soon as they opened.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let t0 = now - now.rem_euclid(60_000) + 60_000 + 1;
    let mut sent = 0usize;
    for round in 0..ROUNDS {
        let ts = iso(t0 + round * 5000);
        let mut start = 0;
        while start < participants {
            let end = (start + BATCH).min(participants);
            let samples: Vec<Value> = (start..end)
                .map(|p| {
                    json!({"kind": "participant_qos", "meeting_id": format!("m{}", p / 100),
                        "participant_id": format!("p{p}"), "user_name": format!("User {p}"), "timestamp": ts,
                        "metrics": {"audio": {"bitrate": 64, "latency": 40 + p % 50, "jitter": 4, "packet_loss": 0.1},
                                    "video": {"bitrate": 1500, "latency": 45, "jitter": 5, "packet_loss": 0.2,
                                              "resolution": "1280x720", "frame_rate": 30},
                                    "cpu_usage": 30}})
                })
                .collect();
            let r = http
                .post(&url)
                .bearer_auth(&key)
                .json(&json!({"samples": samples}))
                .send()
                .await?;
            anyhow::ensure!(r.status() == 202, "ingest: {}", r.status());
            sent += samples.len();
            start = end;
        }
    }
    println!(
        "| {participants} | {sent} | {} MiB | {} MiB |",
        rss_kib("VmRSS:") / 1024,
        rss_kib("VmHWM:") / 1024
    );
    shutdown.cancel();
    server.wait().await?;
    Ok(())
}
