//! Several `qss serve` processes on one PostgreSQL database (SPEC 10, issue 5), on the wall
//! clock, with clients that spread their requests over the nodes.
//!
//! - Three nodes: every participant window is emitted exactly once and counts every
//!   acknowledged sample, every meeting has exactly one summary, and each event reaches the
//!   subscriber exactly once, whichever node aggregated or delivered it.
//! - One of three nodes is killed with SIGKILL mid-run: after its leases run out the others take
//!   its partitions and its claimed deliveries, and the same holds.
//! - PostgreSQL itself stops during ingest: clients get 503 with `Retry-After` (never a 500 or
//!   internals), and when it is back the same process resumes and loses nothing acknowledged.
//! - Rate limits hold for the cluster as a whole, within one second's burst.
//!
//! Each test starts its own PostgreSQL cluster (crates/pgtest); without PostgreSQL they say
//! they were skipped.

mod common;
mod serve_support;
mod webhook_support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use qss_pgtest::PgCluster;
use serde_json::{Value, json};
use serve_support::*;
use webhook_support::{RECEIVER_SECRET, Receiver};

/// Short leases, so that a killed node's work moves within seconds.
const NODE_ENV: &[(&str, &str)] = &[
    ("QSS_POSTGRES_LEASE_SECONDS", "3"),
    ("QSS_WEBHOOK_TIMEOUT_MS", "2000"),
    ("QSS_WEBHOOK_LEASE_SECONDS", "5"),
    ("QSS_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true"),
];
const CLIENTS: usize = 6;
const PARTICIPANTS: usize = 4;
const PACE: Duration = Duration::from_millis(200);
/// Subscriptions of the three-node test, all to one URL (the most an account may have).
const SUBSCRIPTIONS: usize = 20;

/// The test's clients, paced, spreading their requests over `nodes` (a test removes a node
/// from the returned list before it kills it); set the flag to stop them.
fn spread_clients(
    nodes: Vec<String>,
    account: &Account,
) -> (
    Nodes,
    Arc<AtomicBool>,
    Vec<tokio::task::JoinHandle<Ingested>>,
) {
    let stopping = Arc::new(AtomicBool::new(false));
    let spread: Nodes = Arc::new(Mutex::new(nodes));
    let clients = start_clients(
        &spread,
        account,
        CLIENTS,
        PARTICIPANTS,
        PACE,
        stopping.clone(),
        AtStop::ServersStayUp,
    );
    (spread, stopping, clients)
}

async fn start_nodes(dir: &std::path::Path, database: &str, n: usize) -> Vec<ServerProcess> {
    let mut nodes = Vec::new();
    for i in 0..n {
        nodes.push(ServerProcess::start(dir, &format!("node{i}"), database, NODE_ENV).await);
    }
    nodes
}

/// Subscribes `receiver` to participant windows and summaries, through `base`.
async fn subscribe(base: &str, account: &Account, token: &str, receiver: &Receiver) {
    let r = reqwest::Client::new()
        .post(format!(
            "{base}/v2/accounts/{}/qss/webhooks",
            account.account_id
        ))
        .bearer_auth(token)
        .json(
            &json!({"url": receiver.url(), "secret_token": RECEIVER_SECRET,
                      "events": [PARTICIPANT_QOS, MEETING_SUMMARY]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "active", "{v}");
}

/// Waits until every meeting has a summary (or `limit` passes).
async fn wait_for_summaries(
    base: &str,
    account: &Account,
    token: &str,
    meetings: usize,
    limit: Duration,
) -> HashMap<String, usize> {
    let deadline = Instant::now() + limit;
    loop {
        let s = summaries(base, account, token).await;
        if s.len() >= meetings || Instant::now() >= deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until the receiver has every event of the account from each of `subscriptions`;
/// returns how many times each event id arrived.
async fn wait_for_deliveries(
    receiver: &Receiver,
    expected: &HashSet<String>,
    subscriptions: usize,
    limit: Duration,
) -> HashMap<String, usize> {
    let deadline = Instant::now() + limit;
    loop {
        let mut arrived: HashMap<String, HashSet<String>> = HashMap::new();
        for hit in receiver.hits() {
            arrived
                .entry(hit.event_id())
                .or_default()
                .insert(hit.header("webhook-id"));
        }
        let done = expected
            .iter()
            .all(|id| arrived.get(id).is_some_and(|d| d.len() >= subscriptions));
        if done || Instant::now() >= deadline {
            let mut counts: HashMap<String, usize> = HashMap::new();
            for hit in receiver.hits() {
                *counts.entry(hit.event_id()).or_default() += 1;
            }
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Event ids of the account's participant windows and summaries.
async fn all_event_ids(base: &str, account: &Account, token: &str) -> HashSet<String> {
    let mut ids = HashSet::new();
    for t in [PARTICIPANT_QOS, MEETING_SUMMARY] {
        for e in events(base, account, token, t).await {
            ids.insert(e["id"].as_str().unwrap().to_string());
        }
    }
    ids
}

fn logs(nodes: &[ServerProcess]) -> String {
    nodes
        .iter()
        .map(|n| format!("--- {}\n{}", n.log.display(), n.log_text()))
        .collect()
}

/// What the three-node tests check once traffic has stopped: every window once and complete,
/// one summary per meeting, every event delivered (exactly once unless `allow_redelivery`).
async fn check_outcome(
    base: &str,
    account: &Account,
    ingested: &Ingested,
    receiver: &Receiver,
    subscriptions: usize,
    allow_redelivery: bool,
    nodes: &[ServerProcess],
) {
    let token = access_token(base, account).await;
    let wait = Duration::from_secs((INTERVAL_S + GRACE_S) as u64 + 20);
    let acknowledged = per_window(&ingested.acknowledged);
    let windows = wait_for_windows(base, account, &token, &acknowledged, wait).await;
    let counted: u64 = windows.iter().map(|w| w.sample_count).sum();
    eprintln!(
        "{} samples acknowledged ({} uncertain) in {} windows; {} windows emitted, {} samples counted",
        ingested.acknowledged.len(),
        ingested.uncertain.len(),
        acknowledged.len(),
        windows.len(),
        counted
    );
    if !short_windows(&acknowledged, &windows).is_empty() {
        eprintln!("{}", logs(nodes));
    }
    assert_counted_exactly_once(ingested, &windows);

    let summaries = wait_for_summaries(base, account, &token, CLIENTS, wait).await;
    assert_eq!(
        summaries.len(),
        CLIENTS,
        "meetings with a summary: {summaries:?}"
    );
    assert!(
        summaries.values().all(|n| *n == 1),
        "a meeting has several summaries: {summaries:?}"
    );

    let ids = all_event_ids(base, account, &token).await;
    let arrived = wait_for_deliveries(receiver, &ids, subscriptions, Duration::from_secs(30)).await;
    let lost: Vec<&String> = ids
        .iter()
        .filter(|id| arrived.get(*id).copied().unwrap_or(0) < subscriptions)
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} events not delivered to each of {subscriptions} subscriptions",
        lost.len(),
        ids.len()
    );
    let twice: Vec<(&String, &usize)> = arrived
        .iter()
        .filter(|(_, n)| **n > subscriptions)
        .collect();
    eprintln!(
        "{} events delivered, {} more than once, at most {} at once",
        ids.len(),
        twice.len(),
        receiver.max_concurrent()
    );
    if !allow_redelivery {
        assert!(
            twice.is_empty(),
            "events delivered more than once: {twice:?}"
        );
    }
    // The endpoint's cap (16) holds for the cluster, not per node.
    assert!(
        receiver.max_concurrent() <= 16,
        "{} deliveries in flight at once to one endpoint",
        receiver.max_concurrent()
    );
    assert!(
        receiver.overlaps().is_empty(),
        "a delivery was attempted twice at once: {:?}",
        receiver.overlaps()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_emit_every_window_once_and_deliver_every_event_once() {
    let Some(pg) = PgCluster::start("three_nodes") else {
        return;
    };
    let database = pg.create_database();
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_nodes(dir.path(), &database, 3).await;
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let account = create_account(&bases[0]).await;
    let receiver = Receiver::start().await;
    // Twenty subscriptions to one URL and slow answers: each emission queues more deliveries
    // for the endpoint than one node claims ahead, so every node sends to it at once, and
    // the cap of 16 in flight must hold for them together.
    receiver.set_default(webhook_support::Answer::status(200).after(Duration::from_millis(50)));
    // Subscribed through another node than the one that created the account.
    let token = access_token(&bases[2], &account).await;
    for _ in 0..SUBSCRIPTIONS {
        subscribe(&bases[1], &account, &token, &receiver).await;
    }

    let (_, stopping, clients) = spread_clients(bases.clone(), &account);
    tokio::time::sleep(Duration::from_secs(12)).await;
    stopping.store(true, Ordering::SeqCst);
    let ingested = join_clients(clients).await;
    assert!(
        ingested.failures.is_empty(),
        "requests failed: {:?}",
        &ingested.failures[..ingested.failures.len().min(5)]
    );
    end_meetings(&bases[2], &account, &ingested).await;

    check_outcome(
        &bases[1],
        &account,
        &ingested,
        &receiver,
        SUBSCRIPTIONS,
        false,
        &nodes,
    )
    .await;
    // Each node took a share of the aggregation partitions, and together they hold all 64.
    let mut held = Vec::new();
    for n in &nodes {
        assert!(
            n.log_text().contains("took partitions"),
            "{} aggregated nothing:\n{}",
            n.base,
            logs(&nodes)
        );
        let metrics = reqwest::get(format!("{}/metrics", n.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let gauge = |name: &str| -> i64 {
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /metrics:\n{metrics}"))
        };
        assert_eq!(gauge("qss_live_nodes"), 3, "{}", n.base);
        held.push(gauge("qss_partitions_held"));
    }
    assert_eq!(
        held.iter().sum::<i64>(),
        64,
        "partitions held per node: {held:?}"
    );
    assert!(
        held.iter().all(|h| *h >= 20),
        "an unbalanced share: {held:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_run_has_its_windows_and_deliveries_taken_over() {
    let Some(pg) = PgCluster::start("killed_node") else {
        return;
    };
    let database = pg.create_database();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_nodes(dir.path(), &database, 3).await;
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let account = create_account(&bases[0]).await;
    let receiver = Receiver::start().await;
    // Slow answers keep deliveries in flight (claimed) at the moment of the kill.
    receiver.set_default(webhook_support::Answer::status(200).after(Duration::from_millis(800)));
    subscribe(
        &bases[0],
        &account,
        &access_token(&bases[0], &account).await,
        &receiver,
    )
    .await;

    let (spread, stopping, clients) = spread_clients(bases.clone(), &account);
    // Windows fall due at 5 s past each ten (10 s windows, 5 s grace): the kill comes half a
    // second after the second such moment, while that emission's deliveries are in flight
    // and the killed node holds open windows of the next one.
    let start = now_ms();
    let due_phase = (GRACE_S * 1000) % (INTERVAL_S * 1000);
    let mut kill_at = start - start.rem_euclid(INTERVAL_S * 1000) + due_phase + 500;
    while kill_at < start + 14_000 {
        kill_at += INTERVAL_S * 1000;
    }
    tokio::time::sleep(Duration::from_millis((kill_at - now_ms()) as u64)).await;
    spread.lock().unwrap().retain(|b| b != &bases[2]);
    nodes[2].sigkill();
    eprintln!("killed {}", bases[2]);
    tokio::time::sleep(Duration::from_secs(8)).await;
    stopping.store(true, Ordering::SeqCst);
    let ingested = join_clients(clients).await;
    // Only requests in flight to the killed node may have failed.
    assert!(
        ingested.failures.len() <= CLIENTS,
        "requests failed: {:?}",
        ingested.failures
    );
    end_meetings(&bases[0], &account, &ingested).await;

    check_outcome(&bases[1], &account, &ingested, &receiver, 1, true, &nodes).await;
    let survivors = nodes[0].log_text() + &nodes[1].log_text();
    assert!(
        survivors.matches("took partitions").count() >= 3,
        "the survivors did not take the killed node's partitions:\n{}",
        logs(&nodes)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarting_during_ingest_gives_503s_and_loses_nothing_acknowledged() {
    let Some(pg) = PgCluster::start("pg_restart") else {
        return;
    };
    let database = pg.create_database();
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_nodes(dir.path(), &database, 1).await;
    let base = nodes[0].base.clone();
    let account = create_account(&base).await;
    let receiver = Receiver::start().await;
    subscribe(
        &base,
        &account,
        &access_token(&base, &account).await,
        &receiver,
    )
    .await;

    let (_, stopping, clients) = spread_clients(vec![base.clone()], &account);
    tokio::time::sleep(Duration::from_secs(4)).await;
    pg.stop();
    eprintln!("PostgreSQL stopped");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let http = reqwest::Client::new();
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "/readyz while the database is down");
    tokio::time::sleep(Duration::from_secs(2)).await;
    pg.restart();
    eprintln!("PostgreSQL started again");
    tokio::time::sleep(Duration::from_secs(8)).await;
    stopping.store(true, Ordering::SeqCst);
    let ingested = join_clients(clients).await;

    assert!(
        !ingested.failures.is_empty(),
        "no request failed while PostgreSQL was down"
    );
    assert!(
        ingested.failures.iter().all(|f| f.starts_with("503")),
        "answers other than 202 and 503: {:?}",
        ingested.failures
    );
    assert!(
        ingested.bad_503s.is_empty(),
        "503s without Retry-After or with internals: {:?}",
        ingested.bad_503s
    );
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "/readyz after the database is back");
    // The last requests were acknowledged again: ingest resumed in the same process.
    end_meetings(&base, &account, &ingested).await;
    let acked_after: usize = ingested
        .acknowledged
        .iter()
        .filter(|(_, ts)| *ts > now_ms() - 4000)
        .count();
    assert!(
        acked_after > 0,
        "nothing was acknowledged after the restart"
    );

    check_outcome(&base, &account, &ingested, &receiver, 1, false, &nodes).await;
}

/// The rate limits hold for the cluster as a whole (SPEC 2.2, issue 7): each node serves its
/// share, `limit / live nodes`, so requests spread over three nodes are served at the limit,
/// within one second's burst, and not three times it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_hold_across_the_nodes() {
    const LIMIT: u32 = 30;
    let Some(pg) = PgCluster::start("rate_limits") else {
        return;
    };
    let database = pg.create_database();
    let dir = tempfile::tempdir().unwrap();
    let limit = LIMIT.to_string();
    let mut env = NODE_ENV.to_vec();
    env.push(("QSS_RATE_LIMIT_LIGHT", &limit));
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(ServerProcess::start(dir.path(), &format!("node{i}"), &database, &env).await);
    }
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let account = create_account(&bases[0]).await;
    let token = access_token(&bases[0], &account).await;
    // Every node must have seen the others' heartbeats before its share is a third.
    let deadline = Instant::now() + Duration::from_secs(20);
    for base in &bases {
        loop {
            let metrics = reqwest::get(format!("{base}/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if metrics.lines().any(|l| l == "qss_live_nodes 3") {
                break;
            }
            assert!(Instant::now() < deadline, "{base} never saw three nodes");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Let the buckets the setup used refill.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Six clients, each sending to the nodes in turn as fast as they are answered.
    let run = Duration::from_secs(3);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..6 {
        let bases = bases.clone();
        let token = token.clone();
        let path = format!("/v2/accounts/{}/qss/settings", account.account_id);
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let (mut served, mut limited, mut i) = (0u32, 0u32, c);
            while started.elapsed() < run {
                let r = client
                    .get(format!("{}{path}", bases[i % bases.len()]))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                i += 1;
                match r.status().as_u16() {
                    200 => served += 1,
                    429 => {
                        assert!(r.headers().contains_key("retry-after"));
                        limited += 1;
                    }
                    other => panic!("unexpected {other}: {}", r.text().await.unwrap()),
                }
            }
            (served, limited)
        }));
    }
    let (mut served, mut limited) = (0, 0);
    for t in tasks {
        let (s, l) = t.await.unwrap();
        served += s;
        limited += l;
    }
    let elapsed = started.elapsed().as_secs_f64();

    // At most the limit over the run, plus one second's burst; and, the requests being spread
    // evenly, at least three quarters of that (one node alone would give a third).
    let most = f64::from(LIMIT) * (elapsed + 1.0);
    eprintln!("served {served}, limited {limited} in {elapsed:.2} s (most {most:.0})");
    assert!(limited > 0, "nothing was limited: {served} served");
    assert!(
        f64::from(served) <= most + 2.0,
        "served {served} in {elapsed:.2} s at a limit of {LIMIT}/s: over {most:.0}"
    );
    assert!(
        f64::from(served) >= 0.75 * most,
        "served only {served} in {elapsed:.2} s at a limit of {LIMIT}/s"
    );
}
