//! Part b: end-to-end freshness at 10,000 reporting participants. Window close (window end +
//! grace, SPEC 5) to the participant event's arrival at a webhook receiver on 127.0.0.1.
//!
//! 10,000 participants in 100 meetings send one sample every 2 s (timestamp = now) for three
//! whole 10-second windows (grace 2 s); every `qss.meeting_participant_qos` that arrives is
//! timed from its window's close. Also reported: the emission lag (`event_ts` − close, the
//! aggregation thread's share), and how many events each window produced.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::common::{BenchServer, Latency, batch_body, now_ms};
use crate::receiver::Receiver;

pub const PARTICIPANTS: usize = 10_000;
const INTERVAL_S: i64 = 10;
const GRACE_S: i64 = 2;
const ROUND: Duration = Duration::from_secs(2);
const BATCH: usize = 500;
const WINDOWS: i64 = 3;

#[derive(Debug, Serialize)]
pub struct Freshness {
    pub participants: usize,
    pub interval_seconds: i64,
    pub grace_seconds: i64,
    pub windows_measured: i64,
    pub events_expected: usize,
    pub events_received: usize,
    pub close_to_received: Latency,
    pub close_to_emitted: Latency,
    pub samples_sent: usize,
    pub ingest_failures: usize,
}

pub async fn run() -> anyhow::Result<Freshness> {
    let server = BenchServer::start().await?;
    let account = server.create_account("Bench freshness").await?;
    server
        .patch_settings(
            &account,
            serde_json::json!({"aggregation_interval_seconds": INTERVAL_S,
                "aggregation_grace_seconds": GRACE_S}),
        )
        .await?;
    let (receiver, hook) = Receiver::start().await?;
    server
        .subscribe(&account, &hook, &["qss.meeting_participant_qos"])
        .await?;
    // Wait for a fresh window, so that the first measured one is whole.
    let w = INTERVAL_S * 1000;
    let first = (now_ms() / w + 1) * w;
    tokio::time::sleep(Duration::from_millis((first - now_ms()).max(0) as u64)).await;
    let last_end = first + WINDOWS * w;

    let url = server.telemetry_url(&account);
    let http = reqwest::Client::new();
    let mut last_ts = vec![0i64; PARTICIPANTS];
    let (mut sent, mut failures) = (0usize, 0usize);
    let mut round_at = Instant::now();
    while now_ms() < last_end - 500 {
        let mut requests = tokio::task::JoinSet::new();
        for chunk in (0..PARTICIPANTS).collect::<Vec<_>>().chunks(BATCH) {
            let body = batch_body(chunk, &mut last_ts);
            let r = http
                .post(&url)
                .bearer_auth(&account.ingest_key)
                .header("content-type", "application/json")
                .body(body);
            requests.spawn(async move { r.send().await.map(|r| r.status().as_u16()) });
            sent += chunk.len();
        }
        while let Some(r) = requests.join_next().await {
            if !matches!(r, Ok(Ok(202))) {
                failures += 1;
            }
        }
        round_at += ROUND;
        tokio::time::sleep_until(round_at.into()).await;
    }
    // The last measured window closes at last_end + grace; give delivery 10 s more.
    let expected = PARTICIPANTS * WINDOWS as usize;
    let deadline = last_end + GRACE_S * 1000 + 10_000;
    loop {
        let got = receiver
            .arrived
            .lock()
            .expect("receiver lock")
            .iter()
            .filter(|a| window_start(&a.body).is_some_and(|s| s >= first && s < last_end))
            .count();
        if got >= expected || now_ms() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await?;

    let mut per_window: BTreeMap<i64, usize> = BTreeMap::new();
    let (mut received, mut emitted) = (Vec::new(), Vec::new());
    for a in receiver.take() {
        let Some(start) = window_start(&a.body) else {
            continue;
        };
        if start < first || start >= last_end {
            continue;
        }
        *per_window.entry(start).or_default() += 1;
        let close = start + w + GRACE_S * 1000;
        received.push((a.at_ms - close) as f64);
        emitted.push((a.body["event_ts"].as_i64().unwrap_or(0) - close) as f64);
    }
    Ok(Freshness {
        participants: PARTICIPANTS,
        interval_seconds: INTERVAL_S,
        grace_seconds: GRACE_S,
        windows_measured: WINDOWS,
        events_expected: expected,
        events_received: per_window.values().sum(),
        close_to_received: Latency::of_ms(received),
        close_to_emitted: Latency::of_ms(emitted),
        samples_sent: sent,
        ingest_failures: failures,
    })
}

fn window_start(body: &serde_json::Value) -> Option<i64> {
    qss_domain::timefmt::parse_datetime(body["payload"]["object"]["timestamp"].as_str()?)
}
