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

mod serve_support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use serve_support::*;

const PHONE_CALL_QOS: &str = "qss.phone_call_qos";
const CLIENTS: usize = 4;
const PARTICIPANTS_PER_CLIENT: usize = 5;

/// Starts `qss serve` on the SQLite file `<dir>/qss.db` and waits until it answers.
async fn start(dir: &Path, name: &str) -> ServerProcess {
    ServerProcess::start(dir, name, &sqlite_database(dir), &[]).await
}

/// `CLIENTS` clients of `base`, each with its own meeting and participants, posting batches
/// as fast as the server answers until `stopping` is set, which comes just before the server
/// is killed or stopped.
fn start_crash_clients(
    base: &str,
    account: &Account,
    stopping: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Ingested>> {
    let nodes: Nodes = Arc::new(Mutex::new(vec![base.to_string()]));
    start_clients(
        &nodes,
        account,
        CLIENTS,
        PARTICIPANTS_PER_CLIENT,
        Duration::ZERO,
        stopping,
        AtStop::ServerGoesDown,
    )
}

/// When the first server stopped and the second one started and became ready (epoch ms).
struct Restart {
    stopped_ms: i64,
    started_ms: i64,
    ready_ms: i64,
}

/// The checks both restart tests share: no request failed while the server was up, every
/// acknowledged sample counted, no window twice or counting more samples than were sent, no
/// window emitted before end + grace (nor late), and every window still open when the first
/// process stopped emitted by the second one.
fn assert_restart_invariants(ingested: &Ingested, windows: &[Window], restart: &Restart) {
    assert!(
        ingested.failures.is_empty(),
        "requests failed while the server was up: {:?}",
        &ingested.failures[..ingested.failures.len().min(5)]
    );
    assert!(
        !ingested.acknowledged.is_empty(),
        "no batch was acknowledged"
    );
    assert_counted_exactly_once(ingested, windows);

    for w in windows {
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

/// The second half of both restart tests: starts the second server on the database the first
/// one left at `stopped_ms`, waits until the windows of every acknowledged sample show (or
/// [`emission_wait`] passes), and checks [`assert_restart_invariants`].
async fn restart_and_check(
    dir: &Path,
    label: &str,
    account: &Account,
    ingested: &Ingested,
    stopped_ms: i64,
    first_log: &str,
) {
    let started_ms = now_ms();
    let second = start(dir, "second").await;
    let ready_ms = now_ms();
    let token = access_token(&second.base, account).await;
    let expected = per_window(&ingested.acknowledged);
    let windows = wait_for_windows(&second.base, account, &token, &expected, emission_wait()).await;

    eprintln!(
        "{label}: {} samples acknowledged in {} windows; {} windows emitted, {} samples counted",
        ingested.acknowledged.len(),
        expected.len(),
        windows.len(),
        windows.iter().map(|w| w.sample_count).sum::<u64>()
    );
    if !short_windows(&expected, &windows).is_empty() {
        eprintln!(
            "first server log:\n{first_log}\nsecond server log:\n{}",
            second.log_text()
        );
    }
    let restart = Restart {
        stopped_ms,
        started_ms,
        ready_ms,
    };
    assert_restart_invariants(ingested, &windows, &restart);
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
    let mut first = start(dir.path(), "first").await;
    let account = create_account(&first.base).await;

    // Clients post until the kill; a batch in flight at that moment fails, and its samples may
    // or may not be stored.
    let stopping = Arc::new(AtomicBool::new(false));
    let clients = start_crash_clients(&first.base, &account, stopping.clone());
    tokio::time::sleep(Duration::from_secs(4)).await;
    stopping.store(true, Ordering::SeqCst);
    let killed_ms = now_ms();
    first.sigkill();
    let ingested = join_clients(clients).await;
    let first_log = first.log_text();
    drop(first);

    restart_and_check(
        dir.path(),
        "sigkill",
        &account,
        &ingested,
        killed_ms,
        &first_log,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_exits_zero_and_the_next_start_emits_the_open_windows_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = start(dir.path(), "first").await;
    let account = create_account(&first.base).await;

    // Clients post until the signal; the requests in flight then must finish (a 202 must be
    // counted; the samples of anything else may or may not be).
    let stopping = Arc::new(AtomicBool::new(false));
    let clients = start_crash_clients(&first.base, &account, stopping.clone());
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
    let first_log = first.log_text();
    drop(first);

    restart_and_check(
        dir.path(),
        "sigterm",
        &account,
        &ingested,
        stopped_ms,
        &first_log,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_database_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let _first = start(dir.path(), "first").await;

    let mut second = ServerProcess::spawn(dir.path(), "second", &sqlite_database(dir.path()), &[]);
    let status = second.wait_exit(Duration::from_secs(20)).await;
    let output = second.log_text();
    let Some(status) = status else {
        // Dropping `second` kills it.
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
    start(dir, name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_sample_of_an_ended_meeting_counts_nowhere_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(dir.path(), "first").await;
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
    let first = start(dir.path(), "first").await;
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
