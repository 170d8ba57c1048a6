//! Part d: `GET /qss/events` latency with 1 million and then 10 million stored events.
//!
//! Participant events of about 700 bytes, as the server writes them, for five accounts, one
//! million per day of `event_ts` (the first million over the last day, the next nine over the
//! nine days before), are committed through the store in batches of 10,000 in `event_ts` order
//! (a generator thread builds the next batch while one commits). After each size, 1,000
//! sequential first pages (`page_size=30`, random `from` over the filled days) and second pages
//! (following `next_page_token`) over HTTP; the ceiling is the same first-page query run
//! straight on the store, without HTTP, JSON or authentication.

use std::time::{Duration, Instant};

use qss_store::{EventQuery, NewEvent, WriteBatch};
use rand::Rng;
use serde::Serialize;
use serde_json::{Value, json};

use crate::common::{BenchServer, Latency, now_ms};

const PER_COMMIT: usize = 10_000;
pub const ACCOUNTS: usize = 5;
const REQUESTS: usize = 1_000;
pub const DAY_MS: i64 = 86_400_000;
/// Events per day of `event_ts`.
pub const PER_DAY: usize = 1_000_000;
pub const MEETINGS: usize = 500;
pub const PARTICIPANTS: usize = 20_000;

#[derive(Debug, Serialize)]
pub struct Pages {
    pub events: usize,
    pub fill_events_per_s: f64,
    pub database_bytes: u64,
    pub first_page: Latency,
    pub next_page: Latency,
    pub store_ceiling: Latency,
    pub mean_page_len: f64,
    pub failed: usize,
}

/// Disk the database takes per stored event (1.36 KB measured at 10 million), with a margin.
const BYTES_PER_EVENT: u64 = 1_600;

pub async fn run(sizes: &[usize]) -> anyhow::Result<Vec<Pages>> {
    let largest = sizes.iter().copied().max().unwrap_or(0) as u64;
    check_free_disk(largest * BYTES_PER_EVENT)?;
    let server = BenchServer::start().await?;
    let mut accounts = Vec::new();
    for i in 0..ACCOUNTS {
        accounts.push(server.create_account(&format!("Bench events {i}")).await?);
    }
    let ids: Vec<String> = accounts.iter().map(|a| a.account_id.clone()).collect();
    let end = now_ms() - 5_000;
    let mut filled = 0usize;
    let mut results = Vec::new();
    for &size in sizes {
        let fill_started = Instant::now();
        let (from, to) = (filled, size);
        // This step's events fill the days just before the previous step's, one million a day.
        let span_end = end - (from as i64 * DAY_MS) / PER_DAY as i64;
        let span_start = end - (to as i64 * DAY_MS) / PER_DAY as i64;
        let span = span_end - span_start;
        let store = server.sqlite().clone();
        let ids2 = ids.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let (tx, rx) = std::sync::mpsc::sync_channel::<WriteBatch>(2);
            let generator = std::thread::spawn(move || {
                let mut rng = rand::thread_rng();
                for chunk_start in (from..to).step_by(PER_COMMIT) {
                    let mut batch = WriteBatch::default();
                    for i in chunk_start..(chunk_start + PER_COMMIT).min(to) {
                        let event_ts = span_start + ((i - from) as i64 * span) / (to - from) as i64;
                        batch.events.push(participant_event(
                            &ids2[i % ACCOUNTS],
                            i,
                            event_ts,
                            &mut rng,
                        ));
                    }
                    if tx.send(batch).is_err() {
                        return;
                    }
                }
            });
            for batch in rx {
                store.commit(&batch)?;
            }
            generator
                .join()
                .map_err(|_| anyhow::anyhow!("generator panicked"))?;
            Ok(())
        })
        .await??;
        let fill_s = fill_started.elapsed().as_secs_f64();
        filled = size;
        let servers = std::slice::from_ref(&server);
        let mut r = measure(servers, &accounts[0].token, &ids[0], span_start, end).await?;
        r.events = size;
        r.fill_events_per_s = (size - from) as f64 / fill_s;
        r.database_bytes = database_bytes(&server);
        results.push(r);
    }
    server.stop().await?;
    Ok(results)
}

/// Fails at once, rather than minutes into the fill, when the temporary folder's disk cannot
/// hold the database.
pub fn check_free_disk(needed: u64) -> anyhow::Result<()> {
    let dir = std::env::temp_dir();
    let out = std::process::Command::new("df")
        .args(["-k", "--output=avail"])
        .arg(&dir)
        .output()?;
    let free_kib: u64 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(u64::MAX);
    anyhow::ensure!(
        free_kib.saturating_mul(1024) >= needed,
        "the events-page part needs about {} GB free in {} and {} GB are; free some, point \
         TMPDIR elsewhere, or lower QSS_BENCH_EVENTS",
        needed / 1_000_000_000,
        dir.display(),
        free_kib * 1024 / 1_000_000_000
    );
    Ok(())
}

fn database_bytes(server: &BenchServer) -> u64 {
    let path = server.sqlite().path().to_path_buf();
    ["", "-wal"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", path.display())).ok())
        .map(|m| m.len())
        .sum()
}

/// `REQUESTS` first pages at a random `from` in `[start, end)` of `account`'s events, each
/// followed by its next page; with several servers, the first pages go round-robin over them
/// and each next page to the server after its first page's. The ceiling: the same first-page
/// query on `servers[0]`'s store.
pub async fn measure(
    servers: &[BenchServer],
    token: &str,
    account: &str,
    start: i64,
    end: i64,
) -> anyhow::Result<Pages> {
    let mut rng = rand::thread_rng();
    let http = &servers[0].http;
    let store = &servers[0].server.state.store;
    let (mut first, mut next, mut direct) = (Vec::new(), Vec::new(), Vec::new());
    let (mut failed, mut returned) = (0usize, 0usize);
    for n in 0..REQUESTS {
        let from = rng.gen_range(start..end - 60_000) / 1000 * 1000;
        let query = format!(
            "/v2/accounts/{account}/qss/events?page_size=30&from={}",
            qss_domain::timefmt::format_ms(from)
        );
        let base = &servers[n % servers.len()].base;
        let (latency, v) = get(http, &format!("{base}{query}"), token).await?;
        let Some(v) = v else {
            failed += 1;
            continue;
        };
        first.push(latency);
        returned += v["events"].as_array().map_or(0, Vec::len);
        if let Some(t) = v["next_page_token"].as_str().filter(|t| !t.is_empty()) {
            let base = &servers[(n + 1) % servers.len()].base;
            let url = format!("{base}{query}&next_page_token={t}");
            let (latency, v) = get(http, &url, token).await?;
            match v {
                Some(_) => next.push(latency),
                None => failed += 1,
            }
        }
        let q = EventQuery {
            account_id: account.to_string(),
            from,
            to: now_ms() / 1000 * 1000,
            event_types: Vec::new(),
            meeting_id: None,
            meeting_instance_id: None,
            participant_id: None,
            call_id: None,
            after: None,
            max_seq: Some(i64::MAX),
            limit: 31,
        };
        let t0 = Instant::now();
        store.list_events(&q).await?;
        direct.push(t0.elapsed());
    }
    Ok(Pages {
        events: 0,
        fill_events_per_s: 0.0,
        database_bytes: 0,
        first_page: Latency::of(&first),
        next_page: Latency::of(&next),
        store_ceiling: Latency::of(&direct),
        mean_page_len: returned as f64 / first.len().max(1) as f64,
        failed,
    })
}

async fn get(
    http: &reqwest::Client,
    url: &str,
    token: &str,
) -> anyhow::Result<(Duration, Option<Value>)> {
    let t0 = Instant::now();
    let r = http.get(url).bearer_auth(token).send().await?;
    let ok = r.status() == 200;
    let body = r.bytes().await?;
    let latency = t0.elapsed();
    Ok((
        latency,
        ok.then(|| serde_json::from_slice(&body)).transpose()?,
    ))
}

/// A stored `qss.meeting_participant_qos` event of about 700 bytes, as the server writes it.
fn participant_event(account_id: &str, i: usize, event_ts: i64, rng: &mut impl Rng) -> NewEvent {
    let id = qss_domain::event::new_event_id(event_ts);
    let meeting = i / ACCOUNTS % MEETINGS;
    let participant = i / ACCOUNTS % PARTICIPANTS;
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
        meeting_id: Some(meeting_id),
        meeting_instance_id: Some(instance.clone()),
        participant_id: Some(participant_id.clone()),
        call_id: None,
        dedup_key: format!("w\u{1f}{instance}\u{1f}{participant_id}\u{1f}60\u{1f}{window}"),
        body,
    }
}
