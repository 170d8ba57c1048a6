//! End-to-end tests of the account API over real HTTP on 127.0.0.1: the core flow from
//! telemetry to events (SPEC 4, 5), the error catalogue and its precedence (SPEC 2, 3),
//! validation (SPEC 4, 6), pagination over a snapshot (SPEC 2.1) and hostile bodies.
//!
//! Every test runs its own server with a manual clock: windows close when a test moves the
//! clock, never by sleeping through them. The events API only shows events older than
//! now − 2 s, so after closing windows the tests nudge the clock a few more seconds.

// Table-driven tests spell their rows as tuples.
#![allow(clippy::type_complexity)]

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{ADMIN_TOKEN, TestAccount, TestApp, iso, spawn_app, spawn_app_with};
use qss_api::Clock;
use reqwest::Method;
use serde_json::{Value, json};

const PARTICIPANT_QOS: &str = "qss.meeting_participant_qos";
const MEETING_SUMMARY: &str = "qss.meeting_qos_summary";
const PHONE_CALL_QOS: &str = "qss.phone_call_qos";

// ---------------------------------------------------------------------------------------------
// Sample builders
// ---------------------------------------------------------------------------------------------

/// An audio (or video, screen share) group with the four required numbers.
fn media(bitrate: f64, latency: f64, jitter: f64, packet_loss: f64) -> Value {
    json!({"bitrate": bitrate, "latency": latency, "jitter": jitter, "packet_loss": packet_loss})
}

fn video(
    bitrate: f64,
    latency: f64,
    jitter: f64,
    packet_loss: f64,
    resolution: &str,
    frame_rate: f64,
) -> Value {
    let mut v = media(bitrate, latency, jitter, packet_loss);
    v["resolution"] = json!(resolution);
    v["frame_rate"] = json!(frame_rate);
    v
}

/// A `participant_qos` sample with only audio metrics.
fn participant(meeting_id: &str, participant_id: &str, ts_ms: i64, audio: Value) -> Value {
    json!({
        "kind": "participant_qos", "meeting_id": meeting_id, "participant_id": participant_id,
        "timestamp": iso(ts_ms), "metrics": {"audio": audio},
    })
}

fn call(call_id: &str, direction: &str, ts_ms: i64, metrics: Value) -> Value {
    json!({"kind": "call_qos", "call_id": call_id, "direction": direction, "timestamp": iso(ts_ms), "metrics": metrics})
}

fn meeting_ended(meeting_id: &str, ts_ms: i64) -> Value {
    json!({"kind": "meeting_ended", "meeting_id": meeting_id, "timestamp": iso(ts_ms)})
}

/// `value` with the member at JSON pointer `pointer` replaced, or removed when `new` is `None`.
fn with(mut value: Value, pointer: &str, new: Option<Value>) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let object = value.pointer_mut(parent).unwrap().as_object_mut().unwrap();
    match new {
        Some(new) => object.insert(key.to_string(), new),
        None => object.remove(key),
    };
    value
}

/// The whole-second UTC form the API writes (`2024-01-15T10:30:00Z`).
fn whole_seconds(ms: i64) -> String {
    qss_domain::timefmt::format_ms(ms)
}

fn ndjson(samples: &[Value]) -> Vec<u8> {
    // A leading and an inner blank line: blank lines do not count as samples.
    let lines: Vec<String> = samples.iter().map(Value::to_string).collect();
    format!("\n{}\n", lines.join("\n\n")).into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Response helpers
// ---------------------------------------------------------------------------------------------

/// Asserts a catalogue error (status, JSON body with `code` and `message`; `errors[]` on 400)
/// and returns the body.
async fn expect_error(r: reqwest::Response, status: u16, code: i64) -> Value {
    let got = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = r.text().await.unwrap();
    assert_eq!(got, status, "body: {text}");
    assert!(
        content_type.starts_with("application/json"),
        "content type {content_type:?}, body {text}"
    );
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    assert_eq!(v["code"], json!(code), "{text}");
    assert!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{text}"
    );
    if status == 400 {
        let errors = v["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("400 without errors[]: {text}"));
        assert!(!errors.is_empty(), "{text}");
    }
    v
}

/// The `field` of every `errors[]` entry.
fn fields(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_string())
        .collect()
}

async fn expect_status(r: reqwest::Response, status: u16) -> Value {
    let got = r.status().as_u16();
    let text = r.text().await.unwrap();
    assert_eq!(got, status, "body: {text}");
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    }
}

/// Asserts an OAuth error body (`{"error", "reason"}`, not the catalogue's).
async fn expect_oauth_error(r: reqwest::Response, status: u16, error: &str) {
    let got = r.status().as_u16();
    let text = r.text().await.unwrap();
    assert_eq!(got, status, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"], json!(error), "{text}");
    assert!(
        v["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{text}"
    );
    assert!(
        v.get("code").is_none(),
        "OAuth errors do not use the catalogue body: {text}"
    );
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn settings_path(a: &TestAccount) -> String {
    format!("/v2/accounts/{}/qss/settings", a.account_id)
}

fn events_path(a: &TestAccount) -> String {
    format!("/v2/accounts/{}/qss/events", a.account_id)
}

fn telemetry_path(a: &TestAccount) -> String {
    format!("/v2/accounts/{}/qss/telemetry", a.account_id)
}

/// A business account with the add-on, windows of 10 s, no grace, and a read-write token.
async fn fast_account(app: &TestApp) -> (TestAccount, String) {
    let account = app.create_account("business", true).await;
    let token = app.token(&account).await;
    let r = app
        .patch_settings(
            &account,
            &token,
            json!({"aggregation_interval_seconds": 10, "aggregation_grace_seconds": 0}),
        )
        .await;
    assert_eq!(r.status(), 204);
    (account, token)
}

async fn post_ok(app: &TestApp, a: &TestAccount, samples: Value) -> Value {
    let r = app.post_samples(a, samples).await;
    expect_status(r, 202).await
}

/// Moves the clock by `ms` (closing windows), then nudges it a second at a time until at least
/// `n` events match `query`: an event is listed only once `event_ts` < now − 2 s.
async fn settle(
    app: &TestApp,
    a: &TestAccount,
    token: &str,
    query: &str,
    ms: i64,
    n: usize,
) -> Vec<Value> {
    app.advance(ms).await;
    for _ in 0..40 {
        app.clock.advance_ms(1000);
        let events = app.all_events(a, token, query).await;
        if events.len() >= n {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("fewer than {n} events became visible");
}

fn of_type<'a>(events: &'a [Value], event: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == event).collect()
}

/// The object of the participant event of `participant_id` whose window starts at `start_ms`.
fn participant_window<'a>(events: &'a [Value], participant_id: &str, start_ms: i64) -> &'a Value {
    let start = whole_seconds(start_ms);
    let found: Vec<&Value> = of_type(events, PARTICIPANT_QOS)
        .into_iter()
        .map(|e| &e["payload"]["object"])
        .filter(|o| o["participant_id"] == participant_id && o["timestamp"] == start.as_str())
        .collect();
    assert_eq!(found.len(), 1, "{participant_id} at {start}: {found:?}");
    found[0]
}

// ---------------------------------------------------------------------------------------------
// 1. The core flow
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn core_flow_produces_exactly_the_expected_events() {
    // Arrange: an account with 10 s windows and no grace.
    let app = spawn_app().await;
    let t0 = app.clock.now_ms(); // a whole minute, so windows start at t0 and t0 + 10 s
    let at = |s: f64| t0 + (s * 1000.0) as i64;
    let account = app.create_account("business", true).await;
    let token = app.token(&account).await;
    let r = app
        .patch_settings(
            &account,
            &token,
            json!({"aggregation_interval_seconds": 10, "aggregation_grace_seconds": 0}),
        )
        .await;
    assert_eq!(r.status(), 204);
    let settings = expect_status(app.get(&token, &settings_path(&account)).await, 200).await;
    assert_eq!(settings["aggregation_interval_seconds"], 10);
    assert_eq!(settings["aggregation_grace_seconds"], 0);

    let m = "meeting-1";
    // Window 1 [t0, t0+10s). alice's means are SPEC 5.5's (20, 2, 0), bob's (150, 40, 2), zed's
    // (300, 40, 5); dave (window 1 only, 8 samples) averages (200, 40, 3).
    let mut alice1 = participant(m, "alice", at(1.0), media(60.0, 10.0, 1.0, 0.0));
    alice1["user_id"] = json!("u-alice");
    alice1["user_name"] = json!("Alice");
    let mut alice2 = participant(m, "alice", at(6.0), media(68.0, 30.0, 3.0, 0.0));
    alice2["user_name"] = json!("Alice B.");
    let mut bob1 = participant(m, "bob", at(1.0), media(64.0, 140.0, 30.0, 1.0));
    bob1["metrics"]["cpu_usage"] = json!(25);
    let mut bob2 = participant(m, "bob", at(6.0), media(64.0, 160.0, 50.0, 3.0));
    bob2["metrics"]["cpu_usage"] = json!(35);
    let mut zed1 = participant(m, "zed", at(1.0), media(64.0, 290.0, 40.0, 4.0));
    zed1["user_name"] = json!("Zed");
    let zed2 = participant(m, "zed", at(6.0), media(64.0, 310.0, 40.0, 6.0));
    let mut window1 = vec![alice1, alice2, bob1, bob2, zed1, zed2];
    let dave_latency = [170.0, 180.0, 190.0, 200.0, 200.0, 210.0, 220.0, 230.0];
    let dave_loss = [2.0, 4.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0];
    for i in 0..8 {
        window1.push(participant(
            m,
            "dave",
            at(1.0 + i as f64),
            media(64.0, dave_latency[i], 40.0, dave_loss[i]),
        ));
    }
    let mut call1 = call(
        "call-1",
        "inbound",
        at(2.0),
        json!({"bitrate": 64, "latency": 90, "jitter": 8, "packet_loss": 0.5, "mos": 4.1}),
    );
    call1["caller_number"] = json!("+15550001");
    call1["codec"] = json!("opus");
    let mut call2 = call(
        "call-1",
        "inbound",
        at(7.0),
        json!({"bitrate": 64, "latency": 110, "jitter": 12, "packet_loss": 1.5, "mos": 4.3}),
    );
    call2["codec"] = json!("PCMU");
    window1.extend([call1, call2]);

    // Window 2 [t0+10s, t0+20s): alice adds video (low frame rate), bob sends no cpu_usage,
    // zed no user_name; the same audio means.
    let mut alice3 = participant(m, "alice", at(11.0), media(64.0, 18.0, 2.0, 0.0));
    alice3["metrics"]["video"] = video(1500.0, 60.0, 15.0, 0.2, "1280x720", 12.0);
    let mut alice4 = participant(m, "alice", at(16.0), media(64.0, 22.0, 2.0, 0.0));
    alice4["metrics"]["video"] = video(1000.0, 80.0, 25.0, 0.4, "640x360", 14.0);
    let window2 = vec![
        alice3,
        alice4,
        participant(m, "bob", at(11.0), media(64.0, 150.0, 40.0, 2.0)),
        participant(m, "bob", at(16.0), media(64.0, 150.0, 40.0, 2.0)),
        participant(m, "zed", at(11.0), media(64.0, 280.0, 40.0, 5.0)),
        participant(m, "zed", at(16.0), media(64.0, 320.0, 40.0, 5.0)),
    ];

    // Another account reports the same meeting and participant ids: its own business.
    let (neighbour, neighbour_token) = fast_account(&app).await;
    let intruder = participant(m, "alice", at(2.0), media(64.0, 400.0, 60.0, 10.0));

    // Act
    post_ok(
        &app,
        &neighbour,
        json!([intruder, meeting_ended(m, at(3.0))]),
    )
    .await;
    assert_eq!(
        post_ok(&app, &account, json!(window1)).await,
        json!({"accepted": 16, "duplicates": 0})
    );
    assert_eq!(
        post_ok(&app, &account, json!(window2)).await,
        json!({"accepted": 6, "duplicates": 0})
    );
    assert_eq!(
        post_ok(&app, &account, json!([meeting_ended(m, at(18.0))])).await,
        json!({"accepted": 1, "duplicates": 0})
    );
    let events = settle(&app, &account, &token, "", 21_000, 9).await;
    // Nothing more arrives later.
    app.advance(5_000).await;
    let events_again = app.all_events(&account, &token, "").await;

    // Assert: exactly 7 participant windows, 1 summary, 1 phone window.
    assert_eq!(events_again, events);
    assert_eq!(events.len(), 9, "{events:#?}");
    assert_eq!(of_type(&events, PARTICIPANT_QOS).len(), 7);
    assert_eq!(of_type(&events, MEETING_SUMMARY).len(), 1);
    assert_eq!(of_type(&events, PHONE_CALL_QOS).len(), 1);

    // Envelopes: ids, emission time after the windows closed, ordering, account.
    let mut ids = HashSet::new();
    for e in &events {
        let id = e["id"].as_str().unwrap();
        assert!(id.starts_with("evt_") && id.len() == 30, "{id}");
        assert!(
            id[4..]
                .chars()
                .all(|c| "0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(c)),
            "{id}"
        );
        assert!(ids.insert(id.to_string()), "duplicate id {id}");
        assert!(e["event_ts"].as_i64().unwrap() >= at(20.0), "{e}");
        assert_eq!(e["payload"]["account_id"], account.account_id.as_str());
    }
    let keys: Vec<(i64, String)> = events
        .iter()
        .map(|e| {
            (
                e["event_ts"].as_i64().unwrap(),
                e["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "not in (event_ts, id) order: {keys:?}"
    );

    // Participant windows.
    let good = json!({"mos": 4.39, "r_factor": 92.35, "grade": "good", "issues": []});
    let fair = json!({"mos": 3.87, "r_factor": 76.2, "grade": "fair", "issues": []});
    let bad = json!({"mos": 2.77, "r_factor": 53.7, "grade": "bad", "issues": ["high_latency", "high_packet_loss", "low_mos"]});
    let poor = json!({"mos": 3.54, "r_factor": 68.7, "grade": "poor", "issues": ["high_latency", "high_packet_loss", "low_mos"]});
    let instance = participant_window(&events, "alice", t0)["meeting_instance_id"].clone();
    assert!(instance.as_str().is_some_and(|s| !s.is_empty()));
    #[rustfmt::skip]
    let expected: Vec<(&str, i64, u64, Value, Value)> = vec![
        ("alice", t0, 2, json!({"audio": {"bitrate": 64, "latency": 20, "jitter": 2, "packet_loss": 0}}), good.clone()),
        ("alice", at(10.0), 2, json!({"audio": {"bitrate": 64, "latency": 20, "jitter": 2, "packet_loss": 0},
            "video": {"bitrate": 1250, "latency": 70, "jitter": 20, "packet_loss": 0.3, "resolution": "640x360", "frame_rate": 13}}),
            json!({"mos": 4.39, "r_factor": 92.35, "grade": "good", "issues": ["low_frame_rate"]})),
        ("bob", t0, 2, json!({"audio": {"bitrate": 64, "latency": 150, "jitter": 40, "packet_loss": 2}, "cpu_usage": 30}), fair.clone()),
        ("bob", at(10.0), 2, json!({"audio": {"bitrate": 64, "latency": 150, "jitter": 40, "packet_loss": 2}}), fair),
        ("zed", t0, 2, json!({"audio": {"bitrate": 64, "latency": 300, "jitter": 40, "packet_loss": 5}}), bad.clone()),
        ("zed", at(10.0), 2, json!({"audio": {"bitrate": 64, "latency": 300, "jitter": 40, "packet_loss": 5}}), bad.clone()),
        ("dave", t0, 8, json!({"audio": {"bitrate": 64, "latency": 200, "jitter": 40, "packet_loss": 3}}), poor.clone()),
    ];
    for (pid, start, sample_count, metrics, quality) in expected {
        let o = participant_window(&events, pid, start);
        let label = format!("{pid} at {}", whole_seconds(start));
        assert_eq!(o["meeting_id"], m, "{label}");
        assert_eq!(o["meeting_instance_id"], instance, "{label}");
        assert_eq!(o["meeting_type"], "meeting", "{label}");
        assert_eq!(o["interval_seconds"], 10, "{label}");
        assert_eq!(o["sample_count"], sample_count, "{label}");
        assert_eq!(o["metrics"], metrics, "{label}");
        assert_eq!(o["quality"], quality, "{label}");
    }
    // user_id and user_name: from the window's latest sample carrying them, else absent.
    let alice_w1 = participant_window(&events, "alice", t0);
    assert_eq!(alice_w1["user_id"], "u-alice");
    assert_eq!(alice_w1["user_name"], "Alice B.");
    assert_eq!(participant_window(&events, "zed", t0)["user_name"], "Zed");
    for (pid, start) in [("zed", at(10.0)), ("alice", at(10.0)), ("bob", t0)] {
        let o = participant_window(&events, pid, start);
        assert!(
            o.get("user_id").is_none() && o.get("user_name").is_none(),
            "{o}"
        );
    }

    // The meeting summary.
    let summary = &of_type(&events, MEETING_SUMMARY)[0]["payload"]["object"];
    assert_eq!(summary["meeting_id"], m);
    assert_eq!(summary["meeting_instance_id"], instance);
    assert_eq!(summary["meeting_type"], "meeting");
    assert_eq!(summary["start_time"], whole_seconds(at(1.0)));
    assert_eq!(summary["end_time"], whole_seconds(at(18.0)));
    assert_eq!(summary["duration_seconds"], 17);
    assert_eq!(summary["participant_count"], 4);
    assert_eq!(summary["sample_count"], 20);
    // 20 latencies: 10 18 22 30 140 150 150 160 170 180 | 190 200 200 210 220 230 280 290 310 320.
    // Nearest rank: p50 is the 10th smallest, p95 the 19th.
    assert_eq!(
        summary["metrics"]["audio"]["latency"],
        json!({"avg": 174, "min": 10, "max": 320, "p50": 180, "p95": 310})
    );
    assert_eq!(
        summary["metrics"]["cpu_usage"],
        json!({"avg": 30, "min": 25, "max": 35, "p50": 25, "p95": 35})
    );
    assert_eq!(summary["metrics"]["video"]["resolution"], "640x360");
    assert!(summary["metrics"].get("screen_share").is_none());
    // Participant MOS 4.39, 3.87, 2.77, 3.54: mean 3.6425.
    assert_eq!(summary["quality"]["mos_avg"], 3.64);
    assert_eq!(summary["quality"]["grade"], "fair");
    assert_eq!(
        summary["quality"]["grade_counts"],
        json!({"good": 1, "fair": 1, "poor": 1, "bad": 1})
    );
    assert_eq!(
        summary["quality"]["poor_participants"],
        json!([
            {"participant_id": "zed", "user_name": "Zed", "mos": 2.77, "grade": "bad", "issues": bad["issues"]},
            {"participant_id": "dave", "mos": 3.54, "grade": "poor", "issues": poor["issues"]},
        ])
    );

    // The phone call window: client-reported MOS averaged, quality from the means (100, 10, 1).
    let phone = &of_type(&events, PHONE_CALL_QOS)[0]["payload"]["object"];
    assert_eq!(phone["call_id"], "call-1");
    assert_eq!(phone["direction"], "inbound");
    assert_eq!(phone["caller_number"], "+15550001");
    assert!(phone.get("callee_number").is_none());
    assert_eq!(phone["codec"], "PCMU");
    assert_eq!(phone["timestamp"], whole_seconds(t0));
    assert_eq!(phone["interval_seconds"], 10);
    assert_eq!(phone["sample_count"], 2);
    assert_eq!(
        phone["metrics"],
        json!({"bitrate": 64, "latency": 100, "jitter": 10, "packet_loss": 1, "mos": 4.2})
    );
    assert_eq!(
        phone["quality"],
        json!({"mos": 4.27, "r_factor": 87.45, "grade": "good", "issues": []})
    );

    // Whole numbers are written without a fraction, in the raw text.
    let raw = app
        .get(&token, &format!("{}?page_size=300", events_path(&account)))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        raw.contains(r#""audio":{"bitrate":64,"latency":20,"jitter":2,"packet_loss":0}"#),
        "{raw}"
    );
    assert!(raw.contains(r#""interval_seconds":10,"#), "{raw}");
    assert!(raw.contains(r#""avg":174,"#), "{raw}");
    for bad_fraction in [".0,", ".0}", ".0]"] {
        assert!(!raw.contains(bad_fraction), "{bad_fraction} in {raw}");
    }

    // Filters combine with AND.
    let instance_id = instance.as_str().unwrap();
    #[rustfmt::skip]
    let filters: Vec<(String, usize)> = vec![
        (format!("meeting_id={m}"), 8),
        (format!("meeting_instance_id={instance_id}"), 8),
        ("participant_id=zed".to_string(), 2),
        (format!("participant_id=zed&event={MEETING_SUMMARY}"), 0),
        ("call_id=call-1".to_string(), 1),
        (format!("event={MEETING_SUMMARY},{PHONE_CALL_QOS}"), 2),
        (format!("event={PARTICIPANT_QOS}&meeting_id=other"), 0),
    ];
    for (query, n) in filters {
        assert_eq!(
            app.all_events(&account, &token, &query).await.len(),
            n,
            "{query}"
        );
    }

    // The other account saw only its own samples: one window (alice at 400/60/10) and a summary.
    let theirs = app.all_events(&neighbour, &neighbour_token, "").await;
    assert_eq!(theirs.len(), 2, "{theirs:#?}");
    let their_alice = participant_window(&theirs, "alice", t0);
    assert_eq!(their_alice["sample_count"], 1);
    assert_ne!(their_alice["meeting_instance_id"], instance);
    assert_eq!(their_alice["quality"]["mos"], 1.5);
    assert_eq!(their_alice["quality"]["r_factor"], 27.2);
    let their_summary = &of_type(&theirs, MEETING_SUMMARY)[0]["payload"]["object"];
    assert_eq!(their_summary["participant_count"], 1);
}

// ---------------------------------------------------------------------------------------------
// 2. The error catalogue (SPEC 2) and authentication (SPEC 3)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn missing_malformed_and_unknown_tokens_are_401_124() {
    // Arrange
    let app = spawn_app().await;
    let account = app.create_account("business", true).await;
    let valid = participant("m", "p", app.clock.now_ms(), media(64.0, 20.0, 2.0, 0.0));
    let batch = serde_json::to_vec(&json!({"samples": [valid]})).unwrap();
    let requests = [
        (Method::GET, settings_path(&account)),
        (Method::PATCH, settings_path(&account)),
        (Method::GET, events_path(&account)),
        (Method::POST, telemetry_path(&account)),
    ];
    let headers = [
        None,
        Some("Bearer"),
        Some("Basic xyz"),
        Some("Bearer nope-not-a-token"),
        Some("Token abc"),
        Some("bearer qssik_abcdefghijkl_x"),
    ];

    for (method, path) in &requests {
        for auth in headers {
            // Act
            let r = app
                .raw(
                    method.clone(),
                    path,
                    auth,
                    Some("application/json"),
                    batch.clone(),
                )
                .await;
            // Assert
            let body = expect_error(r, 401, 124).await;
            assert_eq!(
                body["message"], "Invalid access token.",
                "{method} {path} with {auth:?}"
            );
        }
    }
}

#[tokio::test]
async fn revoked_credentials_and_ingest_keys_are_refused() {
    // Arrange
    let app = spawn_app().await;
    let account = app.create_account("business", true).await;
    let (client_id, secret) = app
        .create_credentials(&account.account_id, &["qss:read", "qss:write"])
        .await;
    let token = app
        .token_with(&account.account_id, &client_id, &secret)
        .await;
    let other_token = app.token(&account).await;
    expect_status(app.get(&token, &settings_path(&account)).await, 200).await;
    let sample = participant("m", "p", app.clock.now_ms(), media(64.0, 20.0, 2.0, 0.0));
    post_ok(&app, &account, json!([sample])).await;
    let key_id = account.ingest_key.strip_prefix("qssik_").unwrap()[..12].to_string();

    // Act
    let path = format!(
        "/admin/accounts/{}/credentials/{client_id}",
        account.account_id
    );
    assert_eq!(app.admin(Method::DELETE, &path, None).await.status(), 204);
    let path = format!(
        "/admin/accounts/{}/ingest_keys/{key_id}",
        account.account_id
    );
    assert_eq!(app.admin(Method::DELETE, &path, None).await.status(), 204);
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // Assert: the revoked token, credentials and key are refused; other credentials still work.
    expect_error(app.get(&token, &settings_path(&account)).await, 401, 124).await;
    expect_oauth_error(
        app.token_for(&account.account_id, &client_id, &secret)
            .await,
        401,
        "invalid_client",
    )
    .await;
    expect_error(app.post_samples(&account, json!([sample])).await, 401, 124).await;
    expect_status(app.get(&other_token, &settings_path(&account)).await, 200).await;
    // Revoking what does not exist is a 404 naming it.
    let body = expect_error(app.admin(Method::DELETE, &path, None).await, 404, 3001).await;
    assert!(
        body["message"].as_str().unwrap().contains(&key_id),
        "{body}"
    );
}

#[tokio::test]
async fn an_expired_token_is_401_124_with_its_own_message() {
    // Arrange
    let app = spawn_app_with(vec![("auth.token_ttl_seconds", "2")]).await;
    let account = app.create_account("business", true).await;
    let r = app
        .token_for(
            &account.account_id,
            &account.client_id,
            &account.client_secret,
        )
        .await;
    let grant = expect_status(r, 200).await;
    assert_eq!(grant["expires_in"], 2);
    assert_eq!(grant["token_type"], "bearer");
    let token = grant["access_token"].as_str().unwrap().to_string();
    expect_status(app.get(&token, &settings_path(&account)).await, 200).await;

    // Act
    app.clock.advance_ms(3000);

    // Assert
    let body = expect_error(app.get(&token, &settings_path(&account)).await, 401, 124).await;
    assert_eq!(body["message"], "Access token is expired.");
    let body = expect_error(app.get(&token, &events_path(&account)).await, 401, 124).await;
    assert_eq!(body["message"], "Access token is expired.");
}

#[tokio::test]
async fn a_token_without_the_needed_scope_is_403_4711_naming_the_scope() {
    // Arrange
    let app = spawn_app().await;
    let account = app.create_account("business", true).await;
    let (id, secret) = app
        .create_credentials(&account.account_id, &["qss:read"])
        .await;
    let read_only = app.token_with(&account.account_id, &id, &secret).await;
    let (id, secret) = app
        .create_credentials(&account.account_id, &["qss:ingest"])
        .await;
    let ingest_only = app.token_with(&account.account_id, &id, &secret).await;
    let read_write = app.token(&account).await;
    let batch = serde_json::to_vec(&json!({"samples": [participant("m", "p", app.clock.now_ms(), media(64.0, 20.0, 2.0, 0.0))]})).unwrap();
    let json_ct = Some("application/json");

    // Act / Assert: what the scope allows works.
    expect_status(app.get(&read_only, &settings_path(&account)).await, 200).await;
    expect_status(app.get(&read_only, &events_path(&account)).await, 200).await;
    let r = app
        .raw(
            Method::POST,
            &telemetry_path(&account),
            Some(&bearer(&ingest_only)),
            json_ct,
            batch.clone(),
        )
        .await;
    expect_status(r, 202).await;

    // What it does not is 403/4711, naming the missing scope; scopes do not imply one another.
    #[rustfmt::skip]
    let cases: Vec<(Method, String, &str, &str)> = vec![
        (Method::PATCH, settings_path(&account), read_only.as_str(), "qss:write"),
        (Method::POST, telemetry_path(&account), read_only.as_str(), "qss:ingest"),
        (Method::POST, telemetry_path(&account), read_write.as_str(), "qss:ingest"),
        (Method::GET, settings_path(&account), ingest_only.as_str(), "qss:read"),
        (Method::GET, events_path(&account), account.ingest_key.as_str(), "qss:read"),
        (Method::PATCH, settings_path(&account), account.ingest_key.as_str(), "qss:write"),
    ];
    for (method, path, token, scope) in cases {
        let body = if method == Method::PATCH {
            b"{}".to_vec()
        } else {
            batch.clone()
        };
        let r = app
            .raw(method.clone(), &path, Some(&bearer(token)), json_ct, body)
            .await;
        let body = expect_error(r, 403, 4711).await;
        assert!(
            body["message"].as_str().unwrap().contains(scope),
            "{method} {path}: {body}"
        );
    }
}

#[tokio::test]
async fn another_accounts_path_is_403_200_whether_or_not_it_exists() {
    // Arrange
    let app = spawn_app().await;
    let mine = app.create_account("business", true).await;
    let theirs = app.create_account("business", true).await;
    let token = app.token(&mine).await;
    let batch = serde_json::to_vec(&json!({"samples": [participant("m", "p", app.clock.now_ms(), media(64.0, 20.0, 2.0, 0.0))]})).unwrap();

    for other in [theirs.account_id.as_str(), "AAAAAAAAAAAAAAAAAAAAAA", "x"] {
        let cases = [
            (
                Method::GET,
                format!("/v2/accounts/{other}/qss/settings"),
                token.as_str(),
            ),
            (
                Method::PATCH,
                format!("/v2/accounts/{other}/qss/settings"),
                token.as_str(),
            ),
            (
                Method::GET,
                format!("/v2/accounts/{other}/qss/events"),
                token.as_str(),
            ),
            (
                Method::POST,
                format!("/v2/accounts/{other}/qss/telemetry"),
                mine.ingest_key.as_str(),
            ),
        ];
        for (method, path, credential) in cases {
            // Act
            let r = app
                .raw(
                    method.clone(),
                    &path,
                    Some(&bearer(credential)),
                    Some("application/json"),
                    batch.clone(),
                )
                .await;
            // Assert
            expect_error(r, 403, 200).await;
        }
    }
}

#[tokio::test]
async fn without_qss_enabled_every_qss_endpoint_but_reading_settings_is_403_200() {
    // Arrange: QSS needs business or enterprise *and* the add-on.
    let app = spawn_app().await;
    let pro = app.create_account("pro", true).await;
    let no_addon = app.create_account("business", false).await;
    let now = app.clock.now_ms();

    for account in [&pro, &no_addon] {
        let token = app.token(account).await;
        // Act / Assert
        let settings = expect_status(app.get(&token, &settings_path(account)).await, 200).await;
        assert_eq!(settings["qss_enabled"], false);
        expect_error(app.get(&token, &events_path(account)).await, 403, 200).await;
        expect_error(
            app.patch_settings(account, &token, json!({"retention_days": 5}))
                .await,
            403,
            200,
        )
        .await;
        let r = app
            .post_samples(
                account,
                json!([participant("m", "p", now, media(64.0, 20.0, 2.0, 0.0))]),
            )
            .await;
        expect_error(r, 403, 200).await;
    }

    // Enabling applies at once, and so does disabling again.
    let token = app.token(&pro).await;
    let r = app
        .admin(
            Method::PATCH,
            &format!("/admin/accounts/{}", pro.account_id),
            Some(json!({"plan": "enterprise"})),
        )
        .await;
    assert_eq!(r.status(), 200);
    expect_status(app.get(&token, &events_path(&pro)).await, 200).await;
    let r = app
        .admin(
            Method::PATCH,
            &format!("/admin/accounts/{}", pro.account_id),
            Some(json!({"qss_addon": false})),
        )
        .await;
    assert_eq!(r.status(), 200);
    expect_error(app.get(&token, &events_path(&pro)).await, 403, 200).await;
}

#[tokio::test]
async fn when_several_errors_apply_the_first_in_spec_order_wins() {
    // Arrange: small ingest limits so that 413 is cheap to provoke.
    let app = spawn_app_with(vec![
        ("ingest.max_body_bytes", "1000"),
        ("ingest.max_samples", "3"),
    ])
    .await;
    let a = app.create_account("business", true).await;
    let b = app.create_account("business", true).await;
    let pro = app.create_account("pro", true).await;
    let token_a = app.token(&a).await;
    let (id, secret) = app.create_credentials(&a.account_id, &["qss:read"]).await;
    let read_a = app.token_with(&a.account_id, &id, &secret).await;
    let (id, secret) = app.create_credentials(&pro.account_id, &["qss:read"]).await;
    let read_pro = app.token_with(&pro.account_id, &id, &secret).await;
    let garbage = b"{not json".to_vec();
    let big_garbage = vec![b'x'; 2000];
    let four_invalid = serde_json::to_vec(&json!({"samples": [{}, {}, {}, {}]})).unwrap();
    let four_invalid_lines = b"x\ny\nz\nw\n".to_vec();
    let json_ct = "application/json";
    let text_ct = "text/plain";
    let unknown = "Bearer nope";
    let ingest_a = bearer(&a.ingest_key);
    let ingest_pro = bearer(&pro.ingest_key);

    #[rustfmt::skip]
    let cases: Vec<(&str, Method, String, Option<String>, &str, Vec<u8>, u16, i64)> = vec![
        ("405 before 401", Method::DELETE, settings_path(&a), None, json_ct, vec![], 405, 405),
        ("404 route before 401", Method::GET, format!("/v2/accounts/{}/qss/nothing", a.account_id), None, json_ct, vec![], 404, 3001),
        ("401 before other account", Method::GET, settings_path(&b), Some(unknown.into()), json_ct, vec![], 401, 124),
        ("401 before 415", Method::POST, telemetry_path(&a), None, text_ct, garbage.clone(), 401, 124),
        ("other account before missing scope", Method::PATCH, settings_path(&b), Some(bearer(&read_a)), json_ct, b"{}".to_vec(), 403, 200),
        ("other account before QSS disabled", Method::GET, events_path(&pro), Some(bearer(&token_a)), json_ct, vec![], 403, 200),
        ("missing scope before QSS disabled (settings)", Method::PATCH, settings_path(&pro), Some(bearer(&read_pro)), json_ct, b"{}".to_vec(), 403, 4711),
        ("missing scope before QSS disabled (telemetry)", Method::POST, telemetry_path(&pro), Some(bearer(&read_pro)), json_ct, garbage.clone(), 403, 4711),
        ("QSS disabled before 415", Method::POST, telemetry_path(&pro), Some(ingest_pro.clone()), text_ct, garbage.clone(), 403, 200),
        ("QSS disabled before 413", Method::POST, telemetry_path(&pro), Some(ingest_pro.clone()), json_ct, big_garbage.clone(), 403, 200),
        ("415 before 400", Method::POST, telemetry_path(&a), Some(ingest_a.clone()), text_ct, garbage.clone(), 415, 300),
        ("415 before 400 (settings)", Method::PATCH, settings_path(&a), Some(bearer(&token_a)), text_ct, garbage.clone(), 415, 300),
        ("415 before 413", Method::POST, telemetry_path(&a), Some(ingest_a.clone()), text_ct, big_garbage.clone(), 415, 300),
        ("413 body before 400", Method::POST, telemetry_path(&a), Some(ingest_a.clone()), json_ct, big_garbage.clone(), 413, 300),
        ("413 samples before 400", Method::POST, telemetry_path(&a), Some(ingest_a.clone()), json_ct, four_invalid, 413, 300),
        ("413 NDJSON lines before 400", Method::POST, telemetry_path(&a), Some(ingest_a.clone()), "application/x-ndjson", four_invalid_lines, 413, 300),
        ("400 when nothing else applies", Method::POST, telemetry_path(&a), Some(ingest_a.clone()), json_ct, garbage.clone(), 400, 300),
    ];
    for (why, method, path, auth, content_type, body, status, code) in cases {
        // Act
        let r = app
            .raw(method, &path, auth.as_deref(), Some(content_type), body)
            .await;
        // Assert
        let got = r.status().as_u16();
        let text = r.text().await.unwrap();
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{why}: not JSON: {text}"));
        assert_eq!(
            (got, v["code"].as_i64()),
            (status, Some(code)),
            "{why}: {text}"
        );
    }
}

#[tokio::test]
async fn unknown_routes_are_404_3001_with_a_json_body() {
    // Arrange
    let app = spawn_app().await;
    let account = app.create_account("business", true).await;
    let token = app.token(&account).await;

    for (method, path) in [
        (Method::GET, "/v2/nope".to_string()),
        (Method::GET, "/nope".to_string()),
        (
            Method::POST,
            format!("/v2/accounts/{}/qss/unknown", account.account_id),
        ),
        (
            Method::GET,
            format!("/v2/accounts/{}/qss", account.account_id),
        ),
    ] {
        // Act
        let r = app
            .raw(method, &path, Some(&bearer(&token)), None, vec![])
            .await;
        // Assert
        expect_error(r, 404, 3001).await;
    }
    // A resource that does not exist: the message names it.
    let r = app
        .admin(Method::GET, "/admin/accounts/AAAAAAAAAAAAAAAAAAAAAA", None)
        .await;
    let body = expect_error(r, 404, 3001).await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("AAAAAAAAAAAAAAAAAAAAAA"),
        "{body}"
    );
}

#[tokio::test]
async fn a_wrong_method_is_405_with_an_allow_header_and_a_json_body() {
    // Arrange
    let app = spawn_app().await;
    let account = app.create_account("business", true).await;
    let token = app.token(&account).await;

    for (method, path, allowed) in [
        (
            Method::DELETE,
            settings_path(&account),
            vec!["GET", "PATCH"],
        ),
        (Method::GET, telemetry_path(&account), vec!["POST"]),
        (Method::POST, events_path(&account), vec!["GET"]),
        (Method::PUT, "/oauth/token".to_string(), vec!["POST"]),
    ] {
        // Act
        let r = app
            .raw(method.clone(), &path, Some(&bearer(&token)), None, vec![])
            .await;
        // Assert
        let allow = r
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_uppercase())
            .unwrap_or_default();
        for m in allowed {
            assert!(
                allow.contains(m),
                "{method} {path}: Allow {allow:?} lacks {m}"
            );
        }
        expect_error(r, 405, 405).await;
    }
}

#[tokio::test]
async fn oauth_errors_use_the_oauth_body() {
    // Arrange
    let app = spawn_app().await;
    let a = app.create_account("business", true).await;
    let b = app.create_account("business", true).await;
    let url = |query: &str| format!("{}/oauth/token?{query}", app.base);
    let grant = |account: &str| format!("grant_type=account_credentials&account_id={account}");

    // Act / Assert: bad secret, credentials of another account, no credentials.
    let r = app
        .token_for(&a.account_id, &a.client_id, "wrong-secret")
        .await;
    expect_oauth_error(r, 401, "invalid_client").await;
    let r = app
        .token_for(&b.account_id, &a.client_id, &a.client_secret)
        .await;
    expect_oauth_error(r, 401, "invalid_client").await;
    let r = app
        .client
        .post(url(&grant(&a.account_id)))
        .send()
        .await
        .unwrap();
    expect_oauth_error(r, 401, "invalid_client").await;
    // Another grant type; missing parameters.
    let r = app
        .client
        .post(url(&format!(
            "grant_type=password&account_id={}",
            a.account_id
        )))
        .basic_auth(&a.client_id, Some(&a.client_secret))
        .send()
        .await
        .unwrap();
    expect_oauth_error(r, 400, "unsupported_grant_type").await;
    let r = app
        .client
        .post(url("grant_type=account_credentials"))
        .basic_auth(&a.client_id, Some(&a.client_secret))
        .send()
        .await
        .unwrap();
    expect_oauth_error(r, 400, "invalid_request").await;
    let r = app
        .client
        .post(url(&format!("account_id={}", a.account_id)))
        .basic_auth(&a.client_id, Some(&a.client_secret))
        .send()
        .await
        .unwrap();
    expect_oauth_error(r, 400, "invalid_request").await;

    // The parameters may also come as a form body.
    let r = app
        .client
        .post(format!("{}/oauth/token", app.base))
        .basic_auth(&a.client_id, Some(&a.client_secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(grant(&a.account_id))
        .send()
        .await
        .unwrap();
    let v = expect_status(r, 200).await;
    assert_eq!(v["token_type"], "bearer");
    assert_eq!(v["expires_in"], 3600);
    assert_eq!(v["scope"], "qss:read qss:write");
    assert!(v["access_token"].as_str().is_some_and(|t| t.len() >= 22));
}

#[tokio::test]
async fn admin_endpoints_need_the_admin_token_and_it_is_refused_on_v2() {
    // Arrange
    let app = spawn_app().await;
    let account = app.create_account("business", true).await;
    let token = app.token(&account).await;
    let admin = bearer(ADMIN_TOKEN);
    let create = serde_json::to_vec(&json!({"name": "x", "plan": "pro"})).unwrap();

    for auth in [
        None,
        Some("Bearer wrong-admin-token".to_string()),
        Some(bearer(&token)),
        Some(format!("Basic {ADMIN_TOKEN}")),
    ] {
        for (method, path) in [
            (Method::GET, "/admin/accounts".to_string()),
            (Method::POST, "/admin/accounts".to_string()),
            (
                Method::GET,
                format!("/admin/accounts/{}", account.account_id),
            ),
            (
                Method::POST,
                format!("/admin/accounts/{}/credentials", account.account_id),
            ),
            (
                Method::POST,
                format!("/admin/accounts/{}/tokens", account.account_id),
            ),
        ] {
            // Act
            let r = app
                .raw(
                    method.clone(),
                    &path,
                    auth.as_deref(),
                    Some("application/json"),
                    create.clone(),
                )
                .await;
            // Assert
            expect_error(r, 401, 124).await;
        }
    }
    // The operator token is not an account token.
    expect_error(
        app.raw(
            Method::GET,
            &settings_path(&account),
            Some(&admin),
            None,
            vec![],
        )
        .await,
        401,
        124,
    )
    .await;
    expect_error(
        app.raw(
            Method::GET,
            &events_path(&account),
            Some(&admin),
            None,
            vec![],
        )
        .await,
        401,
        124,
    )
    .await;
    let r = app
        .raw(
            Method::POST,
            &telemetry_path(&account),
            Some(&admin),
            Some("application/json"),
            b"{}".to_vec(),
        )
        .await;
    expect_error(r, 401, 124).await;
    // And with it the admin API answers.
    expect_status(
        app.raw(Method::GET, "/admin/accounts", Some(&admin), None, vec![])
            .await,
        200,
    )
    .await;
}

#[tokio::test]
async fn the_operator_issues_account_tokens_and_revokes_them_by_name() {
    // Arrange
    let app = spawn_app().await;
    let account = app.create_account("business", true).await;
    let other = app.create_account("business", true).await;
    let tokens = format!("/admin/accounts/{}/tokens", account.account_id);

    // Act
    let issued = expect_status(app.admin(Method::POST, &tokens, None).await, 201).await;
    let read_only = expect_status(
        app.admin(Method::POST, &tokens, Some(json!({"scopes": ["qss:read"]})))
            .await,
        201,
    )
    .await;

    // Assert: an account token like any other, of that account only.
    assert_eq!(issued["token_type"], "bearer");
    assert_eq!(issued["scope"], "qss:read qss:write");
    let token = issued["access_token"].as_str().unwrap();
    let read_token = read_only["access_token"].as_str().unwrap();
    expect_status(app.get(token, &settings_path(&account)).await, 200).await;
    expect_error(app.get(token, &settings_path(&other)).await, 403, 200).await;
    let r = app
        .raw(
            Method::PATCH,
            &settings_path(&account),
            Some(&bearer(read_token)),
            Some("application/json"),
            br#"{"retention_days": 7}"#.to_vec(),
        )
        .await;
    expect_error(r, 403, 4711).await;
    let r = app
        .admin(Method::POST, "/admin/accounts/nosuchaccount/tokens", None)
        .await;
    expect_error(r, 404, 3001).await;
    let r = app
        .admin(Method::POST, &tokens, Some(json!({"scopes": ["qss:root"]})))
        .await;
    assert_eq!(fields(&expect_error(r, 400, 300).await), ["scopes[0]"]);

    // Revoking the account's client credentials leaves operator tokens alone; revoking
    // `(operator)` ends them at once.
    let r = app
        .admin(
            Method::DELETE,
            &format!(
                "/admin/accounts/{}/credentials/{}",
                account.account_id, account.client_id
            ),
            None,
        )
        .await;
    assert_eq!(r.status(), 204);
    expect_status(app.get(token, &settings_path(&account)).await, 200).await;
    let r = app
        .admin(
            Method::DELETE,
            &format!(
                "/admin/accounts/{}/credentials/(operator)",
                account.account_id
            ),
            None,
        )
        .await;
    assert_eq!(r.status(), 204);
    expect_error(app.get(token, &settings_path(&account)).await, 401, 124).await;
    expect_error(
        app.get(read_token, &settings_path(&account)).await,
        401,
        124,
    )
    .await;
}

#[tokio::test]
async fn admin_input_is_validated_naming_each_field() {
    // Arrange
    let app = spawn_app().await;
    let account = app.create_account("business", true).await;
    let credentials = format!("/admin/accounts/{}/credentials", account.account_id);
    #[rustfmt::skip]
    let cases: Vec<(Method, String, Value, Vec<&str>)> = vec![
        (Method::POST, "/admin/accounts".into(), json!({"plan": "pro"}), vec!["name"]),
        (Method::POST, "/admin/accounts".into(), json!({"name": "x".repeat(129), "plan": "pro"}), vec!["name"]),
        (Method::POST, "/admin/accounts".into(), json!({"name": "x", "plan": "gold", "qss_addon": "yes"}), vec!["plan", "qss_addon"]),
        (Method::PATCH, format!("/admin/accounts/{}", account.account_id), json!({"plan": 3}), vec!["plan"]),
        (Method::POST, credentials.clone(), json!({"scopes": []}), vec!["scopes"]),
        (Method::POST, credentials.clone(), json!({"scopes": ["qss:read", "qss:admin"]}), vec!["scopes[1]"]),
        // A body that is not an object is refused, not read as empty (found by schemathesis).
        (Method::POST, credentials.clone(), json!([null, null]), vec![""]),
        (Method::POST, format!("/admin/accounts/{}/tokens", account.account_id), json!([]), vec![""]),
        (Method::PATCH, format!("/admin/accounts/{}", account.account_id), json!(3), vec![""]),
        (Method::POST, "/admin/accounts".into(), json!("x"), vec![""]),
    ];

    for (method, path, body, expected) in cases {
        // Act
        let r = app.admin(method.clone(), &path, Some(body.clone())).await;
        // Assert
        assert_eq!(
            fields(&expect_error(r, 400, 300).await),
            expected,
            "{method} {path} {body}"
        );
    }
    // Credentials created without scopes get qss:read qss:write.
    let r = app.admin(Method::POST, &credentials, None).await;
    assert_eq!(
        expect_status(r, 201).await["scopes"],
        json!(["qss:read", "qss:write"])
    );
}

#[tokio::test]
async fn a_deleted_accounts_tokens_credentials_and_keys_are_refused_at_once() {
    // Arrange
    let app = spawn_app().await;
    let account = app.create_account("business", true).await;
    let token = app.token(&account).await;
    let sample = participant("m", "p", app.clock.now_ms(), media(64.0, 20.0, 2.0, 0.0));
    post_ok(&app, &account, json!([sample])).await;

    // Act
    let r = app
        .admin(
            Method::DELETE,
            &format!("/admin/accounts/{}", account.account_id),
            None,
        )
        .await;
    assert_eq!(r.status(), 204);

    // Assert: no waiting.
    expect_error(app.get(&token, &settings_path(&account)).await, 401, 124).await;
    expect_error(app.post_samples(&account, json!([sample])).await, 401, 124).await;
    let r = app
        .token_for(
            &account.account_id,
            &account.client_id,
            &account.client_secret,
        )
        .await;
    expect_oauth_error(r, 401, "invalid_client").await;
    let r = app
        .admin(
            Method::GET,
            &format!("/admin/accounts/{}", account.account_id),
            None,
        )
        .await;
    expect_error(r, 404, 3001).await;
}

#[tokio::test]
async fn v2_responses_carry_rate_limit_headers_and_a_drained_bucket_answers_429() {
    // Arrange
    let app = spawn_app_with(vec![("rate_limit.light", "2")]).await;
    let account = app.create_account("business", true).await;
    let token = app.token(&account).await;
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };

    // Act
    let first = app.get(&token, &settings_path(&account)).await;
    let mut limited = None;
    for _ in 0..5 {
        let r = app.get(&token, &settings_path(&account)).await;
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
    }

    // Assert
    assert_eq!(
        header(&first, "x-ratelimit-category").as_deref(),
        Some("Light")
    );
    assert_eq!(header(&first, "x-ratelimit-limit").as_deref(), Some("2"));
    assert!(header(&first, "x-ratelimit-remaining").is_some());
    let r = limited.expect("six requests at 2 per second were all served");
    assert_eq!(header(&r, "x-ratelimit-type").as_deref(), Some("QPS"));
    assert_eq!(header(&r, "x-ratelimit-remaining").as_deref(), Some("0"));
    let retry_after: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    expect_error(r, 429, 429).await;

    // Other categories have their own buckets and headers.
    let r = app.get(&token, &events_path(&account)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-ratelimit-category").as_deref(), Some("Heavy"));
    assert_eq!(header(&r, "x-ratelimit-limit").as_deref(), Some("40"));
    let sample = participant("m", "p", app.clock.now_ms(), media(64.0, 20.0, 2.0, 0.0));
    let r = app.post_samples(&account, json!([sample])).await;
    assert_eq!(r.status(), 202);
    assert_eq!(
        header(&r, "x-ratelimit-category").as_deref(),
        Some("Ingest")
    );
    assert_eq!(header(&r, "x-ratelimit-limit").as_deref(), Some("2000"));
    // A request that fails authentication takes nothing from the account's bucket, and is
    // answered 401, not 429; it still says its category.
    let r = app.get("not-a-token", &settings_path(&account)).await;
    assert_eq!(header(&r, "x-ratelimit-category").as_deref(), Some("Light"));
    expect_error(r, 401, 124).await;
    // Another account is not limited by this one's bucket.
    let other = app.create_account("business", true).await;
    let other_token = app.token(&other).await;
    expect_status(app.get(&other_token, &settings_path(&other)).await, 200).await;
    // The bucket refills: after its Retry-After, the account is served again.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    expect_status(app.get(&token, &settings_path(&account)).await, 200).await;
}

#[tokio::test]
async fn oauth_token_requests_are_limited_per_client_id() {
    // Arrange
    let app = spawn_app_with(vec![("rate_limit.oauth", "3")]).await;
    let a = app.create_account("business", true).await;
    let b = app.create_account("business", true).await;

    // Act: wrong secrets count too (they are what a guesser sends).
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = app
            .token_for(&a.account_id, &a.client_id, "wrong-secret")
            .await;
        statuses.push(r.status().as_u16());
    }
    let limited = app
        .token_for(&a.account_id, &a.client_id, &a.client_secret)
        .await;

    // Assert
    assert_eq!(statuses[..3], [401, 401, 401], "{statuses:?}");
    assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");
    assert_eq!(
        limited.headers()["x-ratelimit-type"].to_str().unwrap(),
        "QPS"
    );
    assert!(limited.headers().contains_key("retry-after"));
    expect_error(limited, 429, 429).await;
    // Another client is not limited.
    expect_status(
        app.token_for(&b.account_id, &b.client_id, &b.client_secret)
            .await,
        200,
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// 3. Validation (SPEC 4, 6), atomic batches and idempotency
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn invalid_samples_are_400_300_naming_each_field_in_json_and_ndjson() {
    // Arrange
    let app = spawn_app().await;
    let account = app.create_account("business", true).await;
    let now = app.clock.now_ms();
    let valid = participant("m", "p", now - 5_000, media(64.0, 20.0, 2.0, 0.0));
    let p = || participant("m", "p2", now - 4_000, media(64.0, 20.0, 2.0, 0.0));
    let with_video = || {
        with(
            p(),
            "/metrics/video",
            Some(video(900.0, 80.0, 5.0, 0.0, "1280x720", 30.0)),
        )
    };
    let c = || {
        call(
            "c1",
            "inbound",
            now - 4_000,
            json!({"bitrate": 64, "latency": 80, "jitter": 5, "packet_loss": 0.5}),
        )
    };
    let long = |n: usize| json!("x".repeat(n));
    #[rustfmt::skip]
    let cases: Vec<(Value, &str)> = vec![
        (json!(42), "samples[1]"),
        (with(p(), "/kind", None), "samples[1].kind"),
        (with(p(), "/kind", Some(json!("participant"))), "samples[1].kind"),
        (with(p(), "/meeting_id", None), "samples[1].meeting_id"),
        (with(p(), "/meeting_id", Some(json!(123))), "samples[1].meeting_id"),
        (with(p(), "/meeting_id", Some(json!(""))), "samples[1].meeting_id"),
        (with(p(), "/participant_id", Some(long(129))), "samples[1].participant_id"),
        (with(p(), "/participant_id", Some(json!("a\u{7}b"))), "samples[1].participant_id"),
        (with(p(), "/user_name", Some(long(257))), "samples[1].user_name"),
        (with(p(), "/meeting_type", Some(json!("seminar"))), "samples[1].meeting_type"),
        (with(p(), "/timestamp", None), "samples[1].timestamp"),
        (with(p(), "/timestamp", Some(json!("yesterday"))), "samples[1].timestamp"),
        (with(p(), "/timestamp", Some(json!(iso(now - 86_400_001)))), "samples[1].timestamp"),
        (with(p(), "/timestamp", Some(json!(iso(now + 300_001)))), "samples[1].timestamp"),
        (with(p(), "/metrics", Some(json!({}))), "samples[1].metrics"),
        (with(p(), "/metrics", Some(json!({"cpu_usage": 5}))), "samples[1].metrics"),
        (with(p(), "/metrics/audio/bitrate", None), "samples[1].metrics.audio.bitrate"),
        (with(p(), "/metrics/audio/bitrate", Some(json!(100_001))), "samples[1].metrics.audio.bitrate"),
        (with(p(), "/metrics/audio/latency", Some(json!(-1))), "samples[1].metrics.audio.latency"),
        (with(p(), "/metrics/audio/latency", Some(json!("20"))), "samples[1].metrics.audio.latency"),
        (with(p(), "/metrics/audio/jitter", Some(json!(60_001))), "samples[1].metrics.audio.jitter"),
        (with(p(), "/metrics/audio/packet_loss", Some(json!(100.5))), "samples[1].metrics.audio.packet_loss"),
        (with(p(), "/metrics/audio/packet_loss", Some(Value::Null)), "samples[1].metrics.audio.packet_loss"),
        (with(p(), "/metrics/cpu_usage", Some(json!(101))), "samples[1].metrics.cpu_usage"),
        (with(with_video(), "/metrics/video/resolution", Some(json!("hd"))), "samples[1].metrics.video.resolution"),
        (with(with_video(), "/metrics/video/frame_rate", Some(json!(241))), "samples[1].metrics.video.frame_rate"),
        (with(p(), "/metrics/screen_share", Some(json!({"bitrate": 1, "jitter": 1, "packet_loss": 1}))), "samples[1].metrics.screen_share.latency"),
        (with(c(), "/direction", Some(json!("sideways"))), "samples[1].direction"),
        (with(c(), "/call_id", None), "samples[1].call_id"),
        (with(c(), "/caller_number", Some(json!(5_551_234))), "samples[1].caller_number"),
        (with(c(), "/codec", Some(long(33))), "samples[1].codec"),
        (with(c(), "/metrics/mos", Some(json!(5.5))), "samples[1].metrics.mos"),
        (json!({"kind": "meeting_ended", "timestamp": iso(now)}), "samples[1].meeting_id"),
        (json!({"kind": "call_ended", "call_id": "c1", "timestamp": iso(now)}), "samples[1].direction"),
    ];

    for (bad, field) in cases {
        let samples = [valid.clone(), bad];
        for (content_type, body) in [
            (
                "application/json",
                serde_json::to_vec(&json!({"samples": samples})).unwrap(),
            ),
            ("application/x-ndjson", ndjson(&samples)),
        ] {
            // Act
            let r = app.post_telemetry_raw(&account, content_type, body).await;
            // Assert
            let body = expect_error(r, 400, 300).await;
            assert_eq!(fields(&body), [field], "{content_type}: {body}");
        }
    }
    // Every failure of a request is listed, across samples and fields.
    let two_bad = [
        with(p(), "/meeting_id", None),
        valid.clone(),
        with(c(), "/metrics/jitter", Some(json!(-1))),
    ];
    let r = app.post_samples(&account, json!(two_bad)).await;
    let body = expect_error(r, 400, 300).await;
    assert_eq!(
        fields(&body),
        ["samples[0].meeting_id", "samples[2].metrics.jitter"]
    );
    // An empty batch is a 400 too.
    let body = expect_error(app.post_samples(&account, json!([])).await, 400, 300).await;
    assert_eq!(fields(&body), ["samples"]);
}

#[tokio::test]
async fn boundary_values_and_every_accepted_body_form_are_202() {
    // Arrange: every limit of SPEC 4 at its edge, unknown fields, ids counted in characters.
    let app = spawn_app().await;
    let account = app.create_account("business", true).await;
    let now = app.clock.now_ms();
    let zeros = media(0.0, 0.0, 0.0, 0.0);
    let mut edge = participant(
        &"é".repeat(128),
        &"x".repeat(128),
        now - 86_400_000,
        media(100_000.0, 60_000.0, 60_000.0, 100.0),
    );
    edge["user_id"] = json!("u".repeat(128));
    edge["user_name"] = json!("n".repeat(256));
    edge["meeting_type"] = json!("webinar");
    edge["unknown"] = json!({"deep": [[1]]});
    edge["metrics"]["video"] = video(0.0, 0.0, 0.0, 0.0, "99999x99999", 240.0);
    edge["metrics"]["screen_share"] = video(1.0, 1.0, 1.0, 1.0, "1x1", 0.0);
    edge["metrics"]["cpu_usage"] = json!(100);
    let mut future = participant("m", "p", now + 300_000, zeros.clone());
    future["metrics"]["cpu_usage"] = json!(0);
    // Nine fractional digits and an explicit offset.
    let mut precise = participant("m", "q", now, zeros);
    precise["timestamp"] = json!(iso(now - 10_000).replace('Z', "123456+00:00"));
    let mut low = call(
        "c",
        "outbound",
        now - 1_000,
        json!({"bitrate": 0, "latency": 0, "jitter": 0, "packet_loss": 0, "mos": 1}),
    );
    low["callee_number"] = json!("9".repeat(64));
    low["codec"] = json!("c".repeat(32));
    let high = call(
        "c",
        "outbound",
        now - 2_000,
        json!({"bitrate": 64, "latency": 1, "jitter": 1, "packet_loss": 1, "mos": 5}),
    );
    let samples = [edge, future, precise, low, high];
    // Sample `i` again under a timestamp not sent before.
    let fresh = |i: usize| {
        with(
            samples[i].clone(),
            "/timestamp",
            Some(json!(iso(now - 20_000 - i as i64))),
        )
    };

    // Act / Assert
    let body = serde_json::to_vec(&json!({"samples": samples})).unwrap();
    let r = app
        .post_telemetry_raw(&account, "application/json; charset=utf-8", body)
        .await;
    assert_eq!(
        expect_status(r, 202).await,
        json!({"accepted": 5, "duplicates": 0})
    );
    // The other media types.
    let ndjson_types = [
        "application/x-ndjson",
        "application/ndjson",
        "application/x-ndjson; charset=UTF-8",
    ];
    for (i, content_type) in ndjson_types.into_iter().enumerate() {
        let r = app
            .post_telemetry_raw(&account, content_type, ndjson(&[fresh(i)]))
            .await;
        assert_eq!(
            expect_status(r, 202).await,
            json!({"accepted": 1, "duplicates": 0}),
            "{content_type}"
        );
    }
    // A gzip body.
    let body = serde_json::to_vec(&json!({"samples": [fresh(3)]})).unwrap();
    let r = app
        .client
        .post(format!("{}{}", app.base, telemetry_path(&account)))
        .bearer_auth(&account.ingest_key)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzip(&body))
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect_status(r, 202).await,
        json!({"accepted": 1, "duplicates": 0})
    );
}

#[tokio::test]
async fn at_most_100_errors_are_listed_and_the_message_counts_them_all() {
    // Arrange
    let app = spawn_app().await;
    let account = app.create_account("business", true).await;
    let now = app.clock.now_ms();
    let bad = with(
        participant("m", "p", now, media(64.0, 20.0, 2.0, 0.0)),
        "/meeting_id",
        None,
    );

    // Act
    let r = app.post_samples(&account, json!(vec![bad; 150])).await;

    // Assert
    let body = expect_error(r, 400, 300).await;
    let listed = fields(&body);
    assert_eq!(listed.len(), 100);
    assert_eq!(listed[0], "samples[0].meeting_id");
    assert_eq!(listed[99], "samples[99].meeting_id");
    assert!(body["message"].as_str().unwrap().contains("150"), "{body}");
}

#[tokio::test]
async fn invalid_settings_are_400_300_naming_the_field_and_change_nothing() {
    // Arrange
    let app = spawn_app().await;
    let account = app.create_account("business", true).await;
    let token = app.token(&account).await;
    let before = expect_status(app.get(&token, &settings_path(&account)).await, 200).await;
    // A new account has SPEC 6's defaults.
    let defaults = json!({
        "account_id": account.account_id, "plan": "business", "qss_addon": true, "qss_enabled": true,
        "event_types": [PARTICIPANT_QOS, MEETING_SUMMARY, PHONE_CALL_QOS],
        "aggregation_interval_seconds": 60, "aggregation_grace_seconds": 10,
        "meeting_end_timeout_seconds": 300, "retention_days": 30,
        "quality_thresholds": {"latency_ms": 150, "jitter_ms": 40, "packet_loss_pct": 2,
                               "frame_rate_fps": 15, "cpu_usage_pct": 80, "mos": 3.6},
    });
    assert_eq!(before, defaults);
    #[rustfmt::skip]
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (json!({"aggregation_interval_seconds": 5}), vec!["aggregation_interval_seconds"]),
        (json!({"aggregation_interval_seconds": 3601}), vec!["aggregation_interval_seconds"]),
        (json!({"aggregation_interval_seconds": "60"}), vec!["aggregation_interval_seconds"]),
        (json!({"aggregation_interval_seconds": 10.5}), vec!["aggregation_interval_seconds"]),
        (json!({"aggregation_grace_seconds": 301}), vec!["aggregation_grace_seconds"]),
        (json!({"aggregation_grace_seconds": null}), vec!["aggregation_grace_seconds"]),
        (json!({"meeting_end_timeout_seconds": 29}), vec!["meeting_end_timeout_seconds"]),
        (json!({"retention_days": 0}), vec!["retention_days"]),
        (json!({"plan": "enterprise"}), vec!["plan"]),
        (json!({"qss_addon": true}), vec!["qss_addon"]),
        (json!({"qss_enabled": true}), vec!["qss_enabled"]),
        (json!({"account_id": account.account_id}), vec!["account_id"]),
        (json!({"quality_thresholds": {"mos": 5}}), vec!["quality_thresholds.mos"]),
        (json!({"quality_thresholds": {"latency_ms": -1}}), vec!["quality_thresholds.latency_ms"]),
        (json!({"quality_thresholds": {"packet_loss_pct": "2"}}), vec!["quality_thresholds.packet_loss_pct"]),
        (json!({"quality_thresholds": 3}), vec!["quality_thresholds"]),
        (json!({"event_types": ["qss.nope"]}), vec!["event_types[0]"]),
        (json!({"event_types": "all"}), vec!["event_types"]),
        (json!([1, 2]), vec![""]),
        // Valid fields beside an invalid one are not applied either.
        (json!({"aggregation_interval_seconds": 30, "retention_days": 7, "plan": "pro"}), vec!["plan"]),
    ];

    for (patch, expected) in cases {
        // Act
        let r = app.patch_settings(&account, &token, patch.clone()).await;
        // Assert
        let body = expect_error(r, 400, 300).await;
        assert_eq!(fields(&body), expected, "{patch}: {body}");
    }
    let r = app
        .raw(
            Method::PATCH,
            &settings_path(&account),
            Some(&bearer(&token)),
            Some("application/json"),
            b"{\"retention_days\": ".to_vec(),
        )
        .await;
    assert_eq!(fields(&expect_error(r, 400, 300).await), [""]);
    let after = expect_status(app.get(&token, &settings_path(&account)).await, 200).await;
    assert_eq!(after, before);

    // A good patch applies, merging thresholds key by key; `{}` is a 204 that changes nothing.
    let r = app.patch_settings(&account, &token, json!({"quality_thresholds": {"mos": 4}, "event_types": [PHONE_CALL_QOS, PHONE_CALL_QOS]})).await;
    assert_eq!(r.status(), 204);
    assert_eq!(
        app.patch_settings(&account, &token, json!({}))
            .await
            .status(),
        204
    );
    // Unknown fields are ignored.
    let r = app
        .patch_settings(&account, &token, json!({"colour": "blue"}))
        .await;
    assert_eq!(r.status(), 204);
    let after = expect_status(app.get(&token, &settings_path(&account)).await, 200).await;
    assert_eq!(after["quality_thresholds"]["mos"], 4);
    assert_eq!(after["quality_thresholds"]["latency_ms"], 150);
    assert_eq!(after["event_types"], json!([PHONE_CALL_QOS]));
}

#[tokio::test]
async fn a_rejected_batch_stores_nothing() {
    // Arrange
    let app = spawn_app().await;
    let account = app.create_account("business", true).await;
    let now = app.clock.now_ms();
    let good = participant("m", "p", now - 5_000, media(64.0, 20.0, 2.0, 0.0));
    let bad = participant("m", "p", now - 4_000, media(64.0, 20.0, 2.0, 101.0));
    let good_call = call(
        "c",
        "outbound",
        now - 5_000,
        json!({"bitrate": 64, "latency": 20, "jitter": 2, "packet_loss": 0}),
    );

    // Act: sample 0 is valid, sample 1 is not, as JSON and as NDJSON.
    let r = app.post_samples(&account, json!([good, bad])).await;
    assert_eq!(
        fields(&expect_error(r, 400, 300).await),
        ["samples[1].metrics.audio.packet_loss"]
    );
    let r = app
        .post_telemetry_raw(
            &account,
            "application/x-ndjson",
            ndjson(&[good_call.clone(), bad.clone()]),
        )
        .await;
    assert_eq!(
        fields(&expect_error(r, 400, 300).await),
        ["samples[1].metrics.audio.packet_loss"]
    );

    // Assert: the valid samples were not stored, so they are new now.
    assert_eq!(
        post_ok(&app, &account, json!([good])).await,
        json!({"accepted": 1, "duplicates": 0})
    );
    let r = app
        .post_telemetry_raw(&account, "application/x-ndjson", ndjson(&[good_call]))
        .await;
    assert_eq!(
        expect_status(r, 202).await,
        json!({"accepted": 1, "duplicates": 0})
    );
}

#[tokio::test]
async fn a_resent_batch_counts_as_duplicates_and_once_in_the_event() {
    // Arrange
    let app = spawn_app().await;
    let (account, token) = fast_account(&app).await;
    let t0 = app.clock.now_ms();
    let batch = json!([
        participant("m", "p", t0 + 1_000, media(64.0, 20.0, 2.0, 0.0)),
        participant("m", "p", t0 + 2_000, media(64.0, 40.0, 2.0, 0.0)),
        participant("m", "p", t0 + 3_000, media(64.0, 60.0, 2.0, 0.0)),
        call(
            "c",
            "inbound",
            t0 + 1_000,
            json!({"bitrate": 64, "latency": 20, "jitter": 2, "packet_loss": 0})
        ),
    ]);
    assert_eq!(
        post_ok(&app, &account, batch.clone()).await,
        json!({"accepted": 4, "duplicates": 0})
    );

    // Act: the same batch again, then once more with one new sample (1 ms later: a new key).
    let again = post_ok(&app, &account, batch.clone()).await;
    let mut extended = batch.as_array().unwrap().clone();
    extended.push(participant(
        "m",
        "p",
        t0 + 3_001,
        media(64.0, 80.0, 2.0, 0.0),
    ));
    let extended_again = post_ok(&app, &account, json!(extended)).await;
    // The end of the meeting and of the call, twice.
    let ends = json!([
        meeting_ended("m", t0 + 5_000),
        {"kind": "call_ended", "call_id": "c", "direction": "inbound", "timestamp": iso(t0 + 5_000)},
    ]);
    let ends_first = post_ok(&app, &account, ends.clone()).await;
    let ends_again = post_ok(&app, &account, ends).await;
    let events = settle(&app, &account, &token, "", 10_000, 3).await;

    // Assert
    assert_eq!(again, json!({"accepted": 4, "duplicates": 4}));
    assert_eq!(extended_again, json!({"accepted": 5, "duplicates": 4}));
    assert_eq!(ends_first, json!({"accepted": 2, "duplicates": 0}));
    assert_eq!(ends_again, json!({"accepted": 2, "duplicates": 2}));
    assert_eq!(events.len(), 3, "{events:#?}");
    let summary = &of_type(&events, MEETING_SUMMARY)[0]["payload"]["object"];
    assert_eq!(summary["sample_count"], 4);
    assert_eq!(summary["participant_count"], 1);
    let p = participant_window(&events, "p", t0);
    assert_eq!(p["sample_count"], 4);
    assert_eq!(p["metrics"]["audio"]["latency"], 50);
    let phone = &of_type(&events, PHONE_CALL_QOS)[0]["payload"]["object"];
    assert_eq!(phone["sample_count"], 1);
}

// ---------------------------------------------------------------------------------------------
// 4. Pagination (SPEC 2.1)
// ---------------------------------------------------------------------------------------------

/// One page of events: `(events, next_page_token, whole response)`.
async fn events_page(
    app: &TestApp,
    a: &TestAccount,
    token: &str,
    query: &str,
) -> (Vec<Value>, String, Value) {
    let r = app.get(token, &format!("{}?{query}", events_path(a))).await;
    let v = expect_status(r, 200).await;
    let events = v["events"].as_array().unwrap().clone();
    let next = v["next_page_token"].as_str().unwrap().to_string();
    (events, next, v)
}

fn id_of(e: &Value) -> String {
    e["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_return_the_first_pages_snapshot_exactly_once_in_order() {
    // Arrange: 1,000 participant windows of one meeting, a quarter in each of four windows,
    // emitted at four clock values. It reads over 40 pages a second: no heavy limit here.
    let app = Arc::new(spawn_app_with(vec![("rate_limit.heavy", "0")]).await);
    let (account, token) = fast_account(&app).await;
    let account = Arc::new(account);
    let t0 = app.clock.now_ms();
    let samples: Vec<Value> = (0..1000i64)
        .map(|i| {
            participant(
                "big",
                &format!("p{i:04}"),
                t0 + (i % 4) * 10_000 + 1_000,
                media(64.0, 20.0, 2.0, 0.0),
            )
        })
        .collect();
    for chunk in samples.chunks(500) {
        assert_eq!(post_ok(&app, &account, json!(chunk)).await["accepted"], 500);
    }
    for _ in 0..3 {
        app.advance(10_000).await;
    }
    let expected = settle(&app, &account, &token, "", 10_000, 1000).await;
    assert_eq!(expected.len(), 1000);
    let distinct_ts: HashSet<i64> = expected
        .iter()
        .map(|e| e["event_ts"].as_i64().unwrap())
        .collect();
    assert!(
        distinct_ts.len() > 1,
        "all events share one event_ts; ordering would be by id alone"
    );

    // Act: the first page, then the clock steps back into the range, so that every event
    // committed from now on carries an event_ts inside the first page's range: only the
    // snapshot keeps them out of the following pages.
    let (first, mut next, first_response) =
        events_page(&app, &account, &token, "page_size=7").await;
    assert_eq!(first_response["page_size"], 7);
    assert_eq!(first.len(), 7);
    let range_to = first_response["to"].as_str().unwrap().to_string();
    let range_from = first_response["from"].as_str().unwrap().to_string();
    app.clock.set_ms(t0 + 25_000);
    // One late sample (its window closed long ago) is emitted at once, inside the range.
    post_ok(
        &app,
        &account,
        json!([participant(
            "big",
            "late-first",
            t0 + 1_000,
            media(64.0, 20.0, 2.0, 0.0)
        )]),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Meanwhile, traffic goes on: late samples and samples of later windows, the clock moving.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = tokio::spawn({
        let (app, account, stop) = (app.clone(), account.clone(), stop.clone());
        async move {
            let mut k = 0;
            while !stop.load(Ordering::SeqCst) {
                let now = app.clock.now_ms();
                let batch = json!([
                    participant(
                        "big",
                        &format!("late{k}"),
                        t0 + 1_000,
                        media(64.0, 20.0, 2.0, 0.0)
                    ),
                    participant(
                        "big",
                        &format!("later{k}"),
                        now + 1_000,
                        media(64.0, 20.0, 2.0, 0.0)
                    ),
                ]);
                assert_eq!(app.post_samples(&account, batch).await.status(), 202);
                app.clock.advance_ms(2_000);
                tokio::time::sleep(Duration::from_millis(50)).await;
                k += 1;
            }
            k
        }
    });
    let mut collected = first;
    let mut pages = 1;
    while !next.is_empty() {
        let (events, token_after, response) = events_page(
            &app,
            &account,
            &token,
            &format!("page_size=7&next_page_token={next}"),
        )
        .await;
        assert_eq!(
            (response["from"].as_str(), response["to"].as_str()),
            (Some(range_from.as_str()), Some(range_to.as_str()))
        );
        assert!(events.len() <= 7);
        collected.extend(events);
        next = token_after;
        pages += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let rounds = traffic.await.unwrap();

    // Assert: every event of the snapshot exactly once, in (event_ts, id) order, nothing else.
    assert_eq!(pages, 143);
    let collected_ids: Vec<String> = collected.iter().map(id_of).collect();
    let expected_ids: Vec<String> = expected.iter().map(id_of).collect();
    assert_eq!(
        collected_ids.iter().collect::<HashSet<_>>().len(),
        collected_ids.len(),
        "an event came twice"
    );
    assert_eq!(collected_ids, expected_ids);
    let keys: Vec<(i64, String)> = collected
        .iter()
        .map(|e| (e["event_ts"].as_i64().unwrap(), id_of(e)))
        .collect();
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "pages are not in (event_ts, id) order"
    );

    // The test is meaningful: events inside the same range were committed while paging.
    assert!(rounds > 0);
    app.clock.advance_ms(60_000);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let fresh = app
        .all_events(
            &account,
            &token,
            &format!("from={range_from}&to={range_to}"),
        )
        .await;
    let snapshot: HashSet<&String> = expected_ids.iter().collect();
    let committed_later: Vec<&Value> = fresh
        .iter()
        .filter(|e| !snapshot.contains(&id_of(e)))
        .collect();
    assert!(
        committed_later
            .iter()
            .any(|e| e["payload"]["object"]["participant_id"] == "late-first"),
        "no event inside the range was committed after the first page: {committed_later:?}"
    );
}

#[tokio::test]
async fn a_page_token_keeps_its_query_and_refuses_forgery_and_bad_page_sizes() {
    // Arrange: three events, so that a page of one has a next page.
    let app = spawn_app().await;
    let (account, token) = fast_account(&app).await;
    let (other, other_token) = fast_account(&app).await;
    let t0 = app.clock.now_ms();
    let batch: Vec<Value> = ["a", "b", "c"]
        .iter()
        .map(|p| participant("m1", p, t0 + 1_000, media(64.0, 20.0, 2.0, 0.0)))
        .collect();
    post_ok(&app, &account, json!(batch)).await;
    settle(&app, &account, &token, "", 10_000, 3).await;
    let (_, next, _) = events_page(&app, &account, &token, "page_size=1&meeting_id=m1").await;
    assert!(!next.is_empty());

    // Act / Assert: a different filter value is a 400 naming that parameter.
    for (query, field) in [
        ("meeting_id=other", "meeting_id"),
        ("participant_id=a", "participant_id"),
        (&format!("event={PHONE_CALL_QOS}") as &str, "event"),
        ("from=2020-01-01", "from"),
    ] {
        let r = app
            .get(
                &token,
                &format!("{}?{query}&next_page_token={next}", events_path(&account)),
            )
            .await;
        let body = expect_error(r, 400, 300).await;
        assert_eq!(fields(&body), [field], "{query}");
    }
    // The same filter repeated, or left out, continues; the page size may change.
    let (events, _, _) = events_page(
        &app,
        &account,
        &token,
        &format!("meeting_id=m1&page_size=5&next_page_token={next}"),
    )
    .await;
    assert_eq!(events.len(), 2);
    let (events, _, _) =
        events_page(&app, &account, &token, &format!("next_page_token={next}")).await;
    assert_eq!(events.len(), 2);

    // A forged, a garbled or another account's token is a 400 naming next_page_token.
    let (body, tag) = next.split_once('.').unwrap();
    let flipped = match tag.strip_prefix('A') {
        Some(rest) => format!("B{rest}"),
        None => format!("A{}", &tag[1..]),
    };
    let forged = format!("{body}.{flipped}");
    for bad in [forged.as_str(), "garbage", "eyJhIjoxfQ.AAAA"] {
        let r = app
            .get(
                &token,
                &format!("{}?next_page_token={bad}", events_path(&account)),
            )
            .await;
        assert_eq!(
            fields(&expect_error(r, 400, 300).await),
            ["next_page_token"],
            "{bad}"
        );
    }
    let r = app
        .get(
            &other_token,
            &format!("{}?next_page_token={next}", events_path(&other)),
        )
        .await;
    assert_eq!(
        fields(&expect_error(r, 400, 300).await),
        ["next_page_token"]
    );

    // page_size outside 1..300 or not an integer.
    for size in ["0", "301", "abc", "-1", "1.5"] {
        let r = app
            .get(
                &token,
                &format!("{}?page_size={size}", events_path(&account)),
            )
            .await;
        assert_eq!(
            fields(&expect_error(r, 400, 300).await),
            ["page_size"],
            "page_size={size:?}"
        );
    }
    // Other query parameters are checked too.
    for (query, field) in [
        ("event=qss.nope", "event"),
        ("from=yesterday", "from"),
        ("from=2020-01-03&to=2020-01-01", "from"),
        ("to=2020-13-01", "to"),
        ("from=2020-01-01&to=2020-03-01", "from"),
    ] {
        let r = app
            .get(&token, &format!("{}?{query}", events_path(&account)))
            .await;
        assert_eq!(fields(&expect_error(r, 400, 300).await), [field], "{query}");
    }
}

#[tokio::test]
async fn polling_from_the_previous_responses_to_sees_each_event_exactly_once() {
    // Arrange: one event whose event_ts is not on a whole second.
    let app = spawn_app().await;
    let (account, token) = fast_account(&app).await;
    let t0 = app.clock.now_ms();
    post_ok(
        &app,
        &account,
        json!([participant(
            "m",
            "p",
            t0 + 1_000,
            media(64.0, 20.0, 2.0, 0.0)
        )]),
    )
    .await;
    app.advance(10_300).await;
    let events = settle(&app, &account, &token, "", 0, 1).await;
    let event_ts = events[0]["event_ts"].as_i64().unwrap();
    assert_ne!(event_ts % 1000, 0);

    // Act: a poller asks for a `to` with milliseconds just after the event, then polls again
    // from the `to` the response showed.
    let query = format!("from={}&to={}", iso(event_ts - 60_000), iso(event_ts + 1));
    let (first, _, response) = events_page(&app, &account, &token, &query).await;
    let shown_to = response["to"].as_str().unwrap().to_string();
    app.clock.advance_ms(5_000);
    let (second, _, _) = events_page(&app, &account, &token, &format!("from={shown_to}")).await;

    // Assert
    assert_eq!(
        first.len() + second.len(),
        1,
        "to={} was shown as {shown_to}: the event was seen {} + {} times",
        iso(event_ts + 1),
        first.len(),
        second.len()
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Robustness (SPEC acceptance 6)
// ---------------------------------------------------------------------------------------------

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn hostile_bodies_get_a_4xx_json_error_and_the_server_keeps_serving() {
    // Arrange
    let app = spawn_app().await;
    let account = app.create_account("business", true).await;
    let token = app.token(&account).await;
    let now = app.clock.now_ms();
    let valid = participant("m", "p", now - 1_000, media(64.0, 20.0, 2.0, 0.0));
    let valid_text = valid.to_string();
    let with_latency = |raw: &str| {
        format!(
            r#"{{"samples": [{}]}}"#,
            valid_text.replace(r#""latency":20.0"#, &format!(r#""latency":{raw}"#))
        )
    };
    assert!(
        with_latency("1").contains(r#""latency":1,"#),
        "the sample builder changed: {valid_text}"
    );
    let deep = |n: usize| format!(r#"{{"samples": [{}{}]}}"#, "[".repeat(n), "]".repeat(n));
    let ten_mb = {
        let mut body = br#"{"samples": [{"kind": "meeting_ended", "meeting_id": ""#.to_vec();
        body.extend(std::iter::repeat_n(b'a', 10 * 1024 * 1024));
        body.extend(br#"", "timestamp": "2024-01-01T00:00:00Z"}]}"#);
        body
    };
    let json_ct = "application/json";
    let ndjson_ct = "application/x-ndjson";

    #[rustfmt::skip]
    let cases: Vec<(&str, &str, Vec<u8>, Option<&str>, u16, Option<&str>)> = vec![
        ("truncated JSON", json_ct, br#"{"samples": [{"kind": "participant_qos", "meeting_id": "m""#.to_vec(), None, 400, Some("")),
        ("empty body", json_ct, vec![], None, 400, Some("")),
        ("JSON null", json_ct, b"null".to_vec(), None, 400, Some("")),
        ("samples not an array", json_ct, br#"{"samples": {"kind": "meeting_ended"}}"#.to_vec(), None, 400, Some("samples")),
        ("a string for a number", json_ct, with_latency(r#""20""#).into_bytes(), None, 400, Some("samples[0].metrics.audio.latency")),
        ("a boolean for a number", json_ct, with_latency("true").into_bytes(), None, 400, Some("samples[0].metrics.audio.latency")),
        ("a huge number", json_ct, with_latency("1e400").into_bytes(), None, 400, None),
        ("a huge integer", json_ct, with_latency(&"9".repeat(400)).into_bytes(), None, 400, None),
        ("a bare NaN", json_ct, with_latency("NaN").into_bytes(), None, 400, Some("")),
        ("NaN as a string", json_ct, with_latency(r#""NaN""#).into_bytes(), None, 400, Some("samples[0].metrics.audio.latency")),
        ("Infinity", json_ct, with_latency("Infinity").into_bytes(), None, 400, Some("")),
        ("10,000-deep nesting", json_ct, deep(10_000).into_bytes(), None, 400, Some("")),
        ("10,000-deep nesting in NDJSON", ndjson_ct, "[".repeat(10_000).into_bytes(), None, 400, Some("")),
        ("10,000-deep objects", json_ct, "{\"a\":".repeat(10_000).into_bytes(), None, 400, Some("")),
        ("invalid UTF-8", json_ct, b"{\"samples\": [\"\xff\xfe\"]}".to_vec(), None, 400, Some("")),
        ("invalid UTF-8 in NDJSON", ndjson_ct, b"{\"kind\": \"\xc3\x28\"}".to_vec(), None, 400, Some("")),
        ("a 10 MB body", json_ct, ten_mb, None, 413, None),
        ("a gzip bomb", json_ct, gzip(&vec![b' '; 10 * 1024 * 1024]), Some("gzip"), 413, None),
        ("invalid gzip", json_ct, b"not gzip at all".to_vec(), Some("gzip"), 400, Some("")),
        ("an unknown encoding", json_ct, valid_text.clone().into_bytes(), Some("br"), 415, None),
    ];

    for (what, content_type, body, encoding, status, field) in cases {
        // Act
        let mut request = app
            .client
            .post(format!("{}{}", app.base, telemetry_path(&account)))
            .bearer_auth(&account.ingest_key)
            .header("content-type", content_type)
            .body(body);
        if let Some(e) = encoding {
            request = request.header("content-encoding", e);
        }
        let r = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: no response: {e}"));
        // Assert
        assert_eq!(r.status().as_u16(), status, "{what}");
        let body = expect_error(r, status, 300).await;
        if let Some(field) = field {
            assert_eq!(fields(&body), [field], "{what}: {body}");
        }
    }

    // Settings bodies get the same treatment.
    let settings_cases: Vec<(&str, Vec<u8>)> = vec![
        ("deep nesting", "[".repeat(10_000).into_bytes()),
        ("invalid UTF-8", b"{\"retention_days\": \"\xff\"}".to_vec()),
        ("a huge number", b"{\"retention_days\": 1e400}".to_vec()),
    ];
    for (what, body) in settings_cases {
        let r = app
            .raw(
                Method::PATCH,
                &settings_path(&account),
                Some(&bearer(&token)),
                Some(json_ct),
                body,
            )
            .await;
        let body = expect_error(r, 400, 300).await;
        assert!(fields(&body).len() == 1, "{what}: {body}");
    }

    // The server still answers, and still accepts a valid batch.
    let health = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        post_ok(&app, &account, json!([valid])).await,
        json!({"accepted": 1, "duplicates": 0})
    );
    expect_status(app.get(&token, &settings_path(&account)).await, 200).await;
}
