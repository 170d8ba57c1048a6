//! Endpoint isolation (SPEC 7.4): an endpoint that hangs on every request holds at most
//! `webhook.max_in_flight_per_endpoint` (16) attempts, and a healthy endpoint of the same
//! account keeps getting every event with first-attempt latency p99 under 1 s.
//!
//! How latency is measured: `event_ts` is manual-clock time, so it cannot be compared with the
//! receiver's arrival. Each round instead posts its samples, then moves the manual clock to the
//! window's end and notes the real time (`Instant`) of that move; the aggregation thread commits
//! the round's events at its next tick (it ticks every 250 ms of real time) and wakes the
//! dispatcher. A delivery's latency is its arrival at the healthy receiver (real time, noted
//! before answering) minus the moment of the move. That bounds the SPEC's "from the event's
//! commit" from above: it also counts up to one aggregation tick.
//!
//! This is its own test binary so that no other test competes for the two cores meanwhile.

mod common;
mod webhook_support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use webhook_support::{Answer, Fixture, PARTICIPANT, PHONE, RECEIVER_SECRET, Receiver};

/// Participant events only the hanging endpoint subscribes to: its backlog, more than its cap.
const BACKLOG: usize = 40;
const ROUNDS: usize = 20;
/// Phone events both endpoints get; fewer than the cap, so the healthy endpoint is within the
/// SPEC's condition for the 1 s bound (fewer than 16 attempts in flight).
const CALLS_PER_ROUND: usize = 8;
const TIMEOUT_MS: u64 = 3000;
/// Rounds are paced so that the hanging endpoint's timeouts (3 s) free and refill its slots
/// several times while the healthy endpoint is measured.
const ROUND_PACE: Duration = Duration::from_millis(600);

/// Most attempts in flight at once at an endpoint that never answers within the timeout.
///
/// The receiver cannot see the moment qss gives up (the closed connection reaches it a little
/// later, and by then qss may have started the next attempt), so each attempt's span is
/// derived instead: it started no later than its arrival and lasted the whole timeout. The
/// span taken is [arrival, arrival + timeout - 100 ms), which lies within the real one as long
/// as a request takes under 100 ms to arrive, so the count never overstates.
fn attempts_in_flight(receiver: &Receiver) -> usize {
    let span = Duration::from_millis(TIMEOUT_MS - 100);
    let mut edges: Vec<(Instant, i32)> = Vec::new();
    for h in receiver.hits() {
        edges.push((h.arrived, 1));
        edges.push((h.arrived + span, -1));
    }
    // At equal instants, ends before starts.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, delta) in edges {
        now += delta;
        most = most.max(now);
    }
    most as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_does_not_delay_a_healthy_one() {
    let f = Fixture::start(vec![
        ("webhook.allow_private_networks", "true"),
        ("webhook.timeout_ms", &TIMEOUT_MS.to_string()),
        ("webhook.max_in_flight_per_endpoint", "16"),
        // Every timed-out attempt comes back at the next round (the clock moves 10 s a round).
        (
            "webhook.retry_schedule_seconds",
            "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1",
        ),
    ])
    .await;
    let hanging = Receiver::start().await;
    hanging.set_default(Answer::status(200).after(Duration::from_secs(60)));
    let healthy = Receiver::start().await;
    f.subscribe(&hanging.url(), RECEIVER_SECRET, &[PHONE, PARTICIPANT])
        .await;
    f.subscribe(&healthy.url(), RECEIVER_SECRET, &[PHONE]).await;

    // Arrival of each call's event at the healthy receiver, and the moment its clock moved.
    let mut moved_at: HashMap<String, Instant> = HashMap::new();
    let backlog_at = f.emit_participants(BACKLOG).await;
    hanging.wait_for_hits(16, Duration::from_secs(10)).await;
    let mut expected = 0;
    for _ in 0..ROUNDS {
        let (ids, moved) = f.emit_calls(CALLS_PER_ROUND).await;
        expected += ids.len();
        moved_at.extend(ids.into_iter().map(|id| (id, moved)));
        healthy
            .wait_for_hits(expected, Duration::from_secs(10))
            .await;
        tokio::time::sleep_until((moved + ROUND_PACE).into()).await;
    }

    let hits = healthy.hits();
    assert_eq!(hits.len(), expected, "the healthy endpoint got duplicates");
    let mut latencies: Vec<Duration> = hits
        .iter()
        .map(|h| {
            let call = h.event["payload"]["object"]["call_id"].as_str().unwrap();
            h.arrived.duration_since(moved_at[call])
        })
        .collect();
    latencies.sort();
    let n = latencies.len();
    let p = |q: f64| latencies[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
    eprintln!(
        "healthy endpoint, {n} first attempts: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}; \
         hanging endpoint: {} requests, at most {} at once",
        p(0.5),
        p(0.9),
        p(0.99),
        latencies[n - 1],
        hanging.hit_count(),
        attempts_in_flight(&hanging)
    );
    assert!(
        p(0.99) < Duration::from_secs(1),
        "first-attempt p99 {:?} over 1 s",
        p(0.99)
    );
    // The hanging endpoint was saturated, and never beyond its cap.
    assert_eq!(
        attempts_in_flight(&hanging),
        16,
        "most attempts in flight at once at the hanging endpoint"
    );
    // Its timeouts freed slots that its own backlog refilled at least once.
    assert!(
        hanging.hit_count() >= 32,
        "the hanging endpoint got {} requests in {:?}",
        hanging.hit_count(),
        backlog_at.elapsed()
    );
}
