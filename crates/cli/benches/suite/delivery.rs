//! Part c: webhook deliveries/s. Events are committed straight through the store in batches
//! of 500 (each commit creates its deliveries in the same transaction, as the aggregation
//! thread does) at an offered 12,000/s for 5 s, to one subscription on a keep-alive receiver on
//! 127.0.0.1. Latency is from the event's commit (`event_ts`) to its arrival.
//!
//! Then a backlog: 30,000 events committed at once (three commits of 10,000, as a window close
//! at 30,000 participants emits them), timed from the first commit until the last delivery
//! arrives: the most deliveries/s the dispatcher drains. Also recorded: the rate from the end of
//! the last commit, the dispatcher alone. The postgres part runs the same [`measure`] on one
//! and three nodes.
//!
//! The ceiling: the same receiver taking plain POSTs of the same bodies from one reqwest client
//! with 16 requests in flight (qss's per-endpoint cap), as fast as it answers.

use std::time::{Duration, Instant};

use qss_store::{NewEvent, WriteBatch};
use serde::Serialize;
use serde_json::json;

use crate::common::{BenchServer, Latency, now_ms};
use crate::receiver::Receiver;

const RATE: u64 = 12_000;
const SECONDS: u64 = 5;
const BATCH: usize = 500;
const IN_FLIGHT: usize = 16;
const BACKLOG: usize = 30_000;
/// Events per backlog commit (as a window close at 10,000 participants emits them).
const BACKLOG_COMMIT: usize = 10_000;

/// What one subscription on `servers` received: the offered phase and the backlog.
#[derive(Debug, Serialize)]
pub struct DeliveryRun {
    pub offered_per_s: u64,
    pub offered: usize,
    /// Events committed per second in the offered phase: below the offered rate when the
    /// commits could not keep up.
    pub committed_per_s: f64,
    pub delivered: usize,
    pub deliveries_per_s: f64,
    pub emission_to_arrival: Latency,
    pub backlog: usize,
    /// Events per backlog commit.
    pub backlog_per_commit: usize,
    /// Seconds from the start of the first backlog commit to the end of the last.
    pub backlog_commit_s: f64,
    /// Deliveries/s from the start of the first backlog commit to the last arrival.
    pub backlog_drain_per_s: f64,
    /// Deliveries/s from the end of the last backlog commit to the last arrival, counting those
    /// that arrived in that span: the dispatchers alone, once everything is committed.
    pub backlog_after_commit_per_s: f64,
    /// Mean duration of one attempt (request sent to response read), whole milliseconds.
    pub mean_attempt_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct Delivery {
    #[serde(flatten)]
    pub run: DeliveryRun,
    pub http_ceiling_requests_per_s: f64,
}

fn event(account: &str, b: usize, i: usize, ts: i64) -> NewEvent {
    let id = qss_domain::event::new_event_id(ts);
    let call_id = format!("c{b}-{i}");
    let body = json!({"id": id, "event": "qss.phone_call_qos", "event_ts": ts,
        "payload": {"account_id": account, "object": {"call_id": call_id, "direction": "inbound",
        "caller_number": "+15550100", "callee_number": "+15550199", "codec": "opus",
        "timestamp": "2026-11-27T10:00:00Z", "interval_seconds": 60, "sample_count": 6,
        "metrics": {"bitrate": 32, "latency": 100, "jitter": 10, "packet_loss": 1, "mos": 4.27},
        "quality": {"mos": 4.27, "r_factor": 87.45, "grade": "good", "issues": []}}}});
    NewEvent {
        id,
        account_id: account.to_string(),
        event_type: "qss.phone_call_qos".into(),
        event_ts: ts,
        meeting_id: None,
        meeting_instance_id: None,
        participant_id: None,
        call_id: Some(call_id),
        dedup_key: format!("bench-{b}-{i}"),
        body: body.to_string(),
    }
}

pub async fn run() -> anyhow::Result<Delivery> {
    let servers = [BenchServer::start().await?];
    let (run, account) = measure(&servers, RATE, SECONDS, BACKLOG, BACKLOG_COMMIT).await?;
    let [server] = servers;
    server.stop().await?;
    let ceiling = http_ceiling(&account).await?;
    Ok(Delivery {
        run,
        http_ceiling_requests_per_s: ceiling,
    })
}

/// One subscription, made through `servers[0]`, to a fresh receiver; events committed through
/// `servers[0]`'s store (so on PostgreSQL every node's dispatcher may claim them): `rate`/s for
/// `seconds`, then a `backlog` committed at once, `per_commit` events a commit. Returns the
/// figures and the account id.
pub async fn measure(
    servers: &[BenchServer],
    rate: u64,
    seconds: u64,
    backlog: usize,
    per_commit: usize,
) -> anyhow::Result<(DeliveryRun, String)> {
    let first = &servers[0];
    let account = first.create_account("Bench delivery").await?;
    let (receiver, hook) = Receiver::start().await?;
    first
        .subscribe(&account, &hook, &["qss.phone_call_qos"])
        .await?;
    let store = first.server.state.store.clone();
    // On SQLite the dispatcher is woken by the committer; on PostgreSQL the commit notifies
    // every node, and these wakes are spurious.
    let wake = || {
        for s in servers {
            s.server.state.delivery_wake.notify_one();
        }
    };

    let total = (rate * seconds) as usize;
    let interval = Duration::from_secs_f64(BATCH as f64 / rate as f64);
    let started = Instant::now();
    for b in 0..total.div_ceil(BATCH) {
        let ts = now_ms();
        let events: Vec<NewEvent> = (0..BATCH)
            .map(|i| event(&account.account_id, b, i, ts))
            .collect();
        store
            .commit(WriteBatch {
                events,
                ..Default::default()
            })
            .await?;
        wake();
        tokio::time::sleep_until((started + interval * (b as u32 + 1)).into()).await;
    }
    let committed_per_s = total as f64 / started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(60);
    while receiver.count() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let arrived = receiver.take();

    // The backlog.
    let drain_started = Instant::now();
    for b in 0..backlog.div_ceil(per_commit) {
        let ts = now_ms();
        let n = per_commit.min(backlog - b * per_commit);
        let events: Vec<NewEvent> = (0..n)
            .map(|i| event(&account.account_id, 1_000_000 + b, i, ts))
            .collect();
        store
            .commit(WriteBatch {
                events,
                ..Default::default()
            })
            .await?;
        wake();
    }
    let backlog_commit_s = drain_started.elapsed().as_secs_f64();
    let committed_ms = now_ms();
    let deadline = Instant::now() + Duration::from_secs(60);
    while receiver.count() < backlog && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drain_s = drain_started.elapsed().as_secs_f64();
    let drained = receiver.take();
    let last_ms = drained
        .iter()
        .map(|a| a.at_ms)
        .max()
        .unwrap_or(committed_ms);
    let after_commit = drained.iter().filter(|a| a.at_ms >= committed_ms).count();
    let (mut attempt_s, mut attempts) = (0.0, 0.0);
    for s in servers {
        let (sum, count) = s.histogram("qss_delivery_attempt_duration_seconds").await?;
        attempt_s += sum;
        attempts += count;
    }
    let latencies: Vec<f64> = arrived
        .iter()
        .map(|a| (a.at_ms - a.body["event_ts"].as_i64().unwrap_or(0)) as f64)
        .collect();
    let run = DeliveryRun {
        offered_per_s: rate,
        offered: total,
        committed_per_s,
        delivered: arrived.len(),
        deliveries_per_s: arrived.len() as f64 / elapsed,
        emission_to_arrival: Latency::of_ms(latencies),
        backlog: drained.len(),
        backlog_per_commit: per_commit,
        backlog_commit_s,
        backlog_drain_per_s: drained.len() as f64 / drain_s,
        backlog_after_commit_per_s: after_commit as f64 * 1000.0
            / (last_ms - committed_ms).max(1) as f64,
        mean_attempt_ms: 1000.0 * attempt_s / attempts.max(1.0),
    };
    Ok((run, account.account_id))
}

/// Plain POSTs/s of the same bodies to a fresh receiver, 16 in flight.
async fn http_ceiling(account: &str) -> anyhow::Result<f64> {
    let (receiver, hook) = Receiver::start().await?;
    let body = event(account, 0, 0, now_ms()).body;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let measure = Duration::from_secs(3);
    let until = Instant::now() + measure;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..IN_FLIGHT {
        let (http, hook, body) = (http.clone(), hook.clone(), body.clone());
        tasks.spawn(async move {
            while Instant::now() < until {
                let r = http
                    .post(&hook)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                if let Ok(r) = r {
                    let _ = r.bytes().await;
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(receiver.count() as f64 / measure.as_secs_f64())
}
