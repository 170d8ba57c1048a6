//! Part e: resident memory with 10,000 and 100,000 concurrently reporting participants, each
//! measured in a fresh child process (this bench re-run with `QSS_BENCH_CHILD=memory:<n>`), so
//! that one size's allocations do not inflate the next.
//!
//! Participants in meetings of 100 each send one sample (audio, video, CPU) every 5 s for a
//! minute (twelve rounds sent as fast as the server takes them, timestamps 5 s apart in the next
//! minute, within the allowed clock skew), so every window and meeting instance is open when VmRSS is read. The figure is the
//! whole process: server and the bench's client. The reference beside it is the same process
//! with an idle server.

use serde::{Deserialize, Serialize};

use crate::common::{BenchServer, now_ms, proc_status_kib, sample_json};

const ROUNDS: i64 = 12;
const BATCH: usize = 1000;

#[derive(Debug, Serialize, Deserialize)]
pub struct Memory {
    pub participants: usize,
    pub samples: usize,
    pub idle_server_rss_mib: f64,
    pub rss_mib: f64,
    pub hwm_mib: f64,
    pub bytes_per_participant: f64,
}

/// Runs one size in a child process and returns what it measured.
pub fn run(participants: usize) -> anyhow::Result<Memory> {
    let exe = std::env::current_exe()?;
    let out = std::process::Command::new(exe)
        .env("QSS_BENCH_CHILD", format!("memory:{participants}"))
        .stderr(std::process::Stdio::inherit())
        .output()?;
    anyhow::ensure!(out.status.success(), "memory child failed: {}", out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("MEMORY "))
        .ok_or_else(|| anyhow::anyhow!("memory child printed no result: {stdout}"))?;
    Ok(serde_json::from_str(line)?)
}

/// The child's side: measure and print one `MEMORY {json}` line.
pub async fn child(participants: usize) -> anyhow::Result<()> {
    let server = BenchServer::start().await?;
    let account = server.create_account("Bench memory").await?;
    let idle = proc_status_kib("VmRSS:") as f64 / 1024.0;
    let url = server.telemetry_url(&account);
    let now = now_ms();
    // The next minute's window is due at least 70 s from now: nothing is emitted (and freed)
    // before VmRSS is read, whatever the wall clock.
    let t0 = now - now.rem_euclid(60_000) + 60_000 + 1;
    let mut samples = 0usize;
    for round in 0..ROUNDS {
        let ts = t0 + round * 5000;
        for start in (0..participants).step_by(BATCH) {
            let end = (start + BATCH).min(participants);
            let mut body = String::from("{\"samples\":[");
            for p in start..end {
                if p > start {
                    body.push(',');
                }
                body.push_str(&sample_json(p / 100, p, ts));
            }
            body.push_str("]}");
            let r = server
                .http
                .post(&url)
                .bearer_auth(&account.ingest_key)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await?;
            anyhow::ensure!(r.status() == 202, "ingest: {}", r.status());
            samples += end - start;
        }
    }
    let rss = proc_status_kib("VmRSS:") as f64 / 1024.0;
    let hwm = proc_status_kib("VmHWM:") as f64 / 1024.0;
    let m = Memory {
        participants,
        samples,
        idle_server_rss_mib: idle,
        rss_mib: rss,
        hwm_mib: hwm,
        bytes_per_participant: (rss - idle) * 1024.0 * 1024.0 / participants as f64,
    };
    println!("MEMORY {}", serde_json::to_string(&m)?);
    server.stop().await
}
