//! `qss simulate` against a stand-in ingest endpoint on 127.0.0.1 that throttles: the first
//! batch it sees is answered 429, then 503 when it comes again (both with `Retry-After: 1`),
//! then 202; every other batch 202. The simulator must wait, send the same batch again, and
//! report every sample accepted.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;

#[derive(Default)]
struct Seen {
    samples: AtomicUsize,
    /// The first batch seen, and when (ms since the test began) each of its tries arrived.
    first: std::sync::Mutex<Option<(Bytes, Vec<u128>)>>,
}

fn number(text: &str, prefix: &str) -> u64 {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{text}"))
}

#[tokio::test]
async fn simulate_retries_after_429_and_503_and_loses_nothing() {
    let seen = Arc::new(Seen::default());
    let began = Instant::now();
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/v2/accounts/acct_sim/qss/telemetry",
        post(move |headers: HeaderMap, body: Bytes| {
            let s = s.clone();
            async move {
                assert_eq!(
                    headers.get("authorization").and_then(|v| v.to_str().ok()),
                    Some("Bearer key_sim")
                );
                let try_of_first = {
                    let mut first = s.first.lock().unwrap();
                    let (batch, tries) = first.get_or_insert_with(|| (body.clone(), Vec::new()));
                    (*batch == body).then(|| {
                        tries.push(began.elapsed().as_millis());
                        tries.len()
                    })
                };
                let v: serde_json::Value = serde_json::from_slice(&body).expect("a JSON batch");
                let samples = v["samples"].as_array().expect("samples").len();
                match try_of_first {
                    Some(1) => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "{}")
                        .into_response(),
                    Some(2) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        [("retry-after", "1")],
                        "{}",
                    )
                        .into_response(),
                    _ => {
                        s.samples.fetch_add(samples, Ordering::SeqCst);
                        let answer = format!(r#"{{"accepted": {samples}, "duplicates": 0}}"#);
                        (StatusCode::ACCEPTED, answer).into_response()
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_qss"))
        .args(["simulate", "--url", &url, "--account-id", "acct_sim"])
        .args([
            "--ingest-key",
            "key_sim",
            "--duration",
            "3",
            "--sample-interval",
            "1",
        ])
        .args([
            "--meetings",
            "1",
            "--participants",
            "3",
            "--calls",
            "1",
            "--seed",
            "7",
        ])
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("simulate finishes")
        .expect("simulate runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let sent = number(&stdout, "sent ");
    assert!(sent > 0, "{stdout}");
    assert_eq!(number(&stdout, "accepted "), sent, "{stdout}");
    assert_eq!(number(&stdout, "throttled "), 0, "{stdout}");
    assert_eq!(number(&stdout, "errors "), 0, "{stdout}");
    assert_eq!(number(&stdout, "retried "), 1, "{stdout}");
    assert!(stdout.contains("(2 retries"), "{stdout}");
    // The server stored exactly what the simulator says it sent.
    assert_eq!(seen.samples.load(Ordering::SeqCst) as u64, sent);
    // The throttled batch came three times, each retry after its Retry-After (1 s).
    let (_, tries) = seen.first.lock().unwrap().clone().expect("a batch arrived");
    assert_eq!(tries.len(), 3, "{tries:?}");
    assert!(tries[1] - tries[0] >= 950, "{tries:?}");
    assert!(tries[2] - tries[1] >= 950, "{tries:?}");
}
