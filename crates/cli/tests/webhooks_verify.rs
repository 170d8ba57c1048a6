//! Webhook signatures checked by code that is not ours (SPEC 7.3): every delivery received on
//! 127.0.0.1 is written to a temporary folder and verified by
//!
//! - the Standard Webhooks reference library for Python (`standardwebhooks` on PyPI:
//!   `Webhook(secret).verify(body, headers)`), for `webhook-signature`;
//! - a Node verifier that does what Zoom's Node SDK does for `x-zm-signature`: parse the body,
//!   re-serialise it with `JSON.stringify`, and HMAC `"v0:" + timestamp + ":" + that`.
//!
//! Each check is also run on a tampered body, which must fail, so the verifiers can fail.
//! Without the Python package or Node these tests fail under `CI=true` and otherwise print a
//! note and skip that verifier.

mod common;
mod webhook_support;

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use webhook_support::{Fixture, Hit, PARTICIPANT, PHONE, RECEIVER_SECRET, Receiver};

const SUMMARY: &str = "qss.meeting_qos_summary";
const ALL_EVENTS: [&str; 3] = [PARTICIPANT, SUMMARY, PHONE];

/// Standard Webhooks verification: argv = body file, headers file, secret, "str" | "bytes".
/// A secret passed as `str` must be `whsec_` + base64 (the library decodes it); a secret
/// without that prefix is passed as its UTF-8 bytes, as SPEC 7.3 tells users to.
const PYTHON_VERIFIER: &str = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
body = open(sys.argv[1], "rb").read()
headers = json.load(open(sys.argv[2]))
secret = sys.argv[3] if sys.argv[4] == "str" else sys.argv[3].encode()
Webhook(secret).verify(body, headers)
"#;

/// Zoom's Node SDK verification: argv = body file, headers file, secret.
const NODE_VERIFIER: &str = r#"
const fs = require("fs");
const crypto = require("crypto");
const [bodyFile, headersFile, secret] = process.argv.slice(1);
const body = fs.readFileSync(bodyFile, "utf8");
const headers = JSON.parse(fs.readFileSync(headersFile, "utf8"));
const message = `v0:${headers["x-zm-request-timestamp"]}:${JSON.stringify(JSON.parse(body))}`;
const expected = "v0=" + crypto.createHmac("sha256", secret).update(message).digest("hex");
if (expected !== headers["x-zm-signature"]) {
  console.error("x-zm-signature mismatch");
  process.exit(1);
}
"#;

/// Whether a verifier's runtime is here (probed once per test binary); in CI its absence
/// fails the test.
fn available(name: &str, probe: &mut Command, install: &str) -> bool {
    let ok = probe.output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name} is required in CI: {install}"
        );
        eprintln!("note: {name} is not available here, so its checks are SKIPPED ({install})");
    }
    ok
}

fn python_available() -> bool {
    static PYTHON: OnceLock<bool> = OnceLock::new();
    *PYTHON.get_or_init(|| {
        available(
            "the Python package standardwebhooks",
            Command::new("python3").args(["-c", "import standardwebhooks.webhooks"]),
            "python3 -m pip install standardwebhooks",
        )
    })
}

fn node_available() -> bool {
    static NODE: OnceLock<bool> = OnceLock::new();
    *NODE.get_or_init(|| {
        available(
            "node",
            Command::new("node").arg("--version"),
            "install Node.js",
        )
    })
}

/// Writes `body` and the delivery's headers (lowercase names) to `dir`; returns their paths.
fn write_delivery(dir: &Path, hit: &Hit, body: &[u8]) -> (String, String) {
    let headers: serde_json::Map<String, Value> = hit
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), json!(v.to_str().unwrap())))
        .collect();
    let body_path = dir.join(format!("{}.body", hit.delivery_id));
    let headers_path = dir.join(format!("{}.headers.json", hit.delivery_id));
    std::fs::write(&body_path, body).unwrap();
    std::fs::write(&headers_path, serde_json::to_vec(&headers).unwrap()).unwrap();
    (
        body_path.display().to_string(),
        headers_path.display().to_string(),
    )
}

/// Runs a verifier; `Err` carries its output.
fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().expect("verifier runs");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// How the Standard Webhooks library is given the secret.
#[derive(Clone, Copy)]
enum Key<'a> {
    /// `whsec_...`, passed as a string.
    Whsec(&'a str),
    /// Any other secret, passed as its UTF-8 bytes.
    Bytes(&'a str),
}

fn python_verify(dir: &Path, hit: &Hit, body: &[u8], key: Key<'_>) -> Result<(), String> {
    let (body, headers) = write_delivery(dir, hit, body);
    let (secret, form) = match key {
        Key::Whsec(s) => (s, "str"),
        Key::Bytes(s) => (s, "bytes"),
    };
    run(Command::new("python3").args(["-c", PYTHON_VERIFIER, &body, &headers, secret, form]))
}

fn node_verify(dir: &Path, hit: &Hit, body: &[u8], secret: &str) -> Result<(), String> {
    let (body, headers) = write_delivery(dir, hit, body);
    run(Command::new("node").args(["-e", NODE_VERIFIER, &body, &headers, secret]))
}

/// The same JSON with one value changed: still parseable, so the Node verifier gets as far as
/// comparing signatures.
fn tampered(body: &[u8]) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(body).unwrap();
    v["event_ts"] = json!(v["event_ts"].as_i64().unwrap() + 1);
    serde_json::to_vec(&v).unwrap()
}

/// Asserts that both verifiers accept `hit` with these secrets and reject a tampered body.
fn assert_verifies(dir: &Path, hit: &Hit, standard: Key<'_>, zoom_secret: &str) {
    let what = format!("{} ({})", hit.event["event"], hit.delivery_id);
    let bad = tampered(&hit.body);
    if python_available() {
        if let Err(e) = python_verify(dir, hit, &hit.body, standard) {
            panic!(
                "standardwebhooks rejected {what}: {e}\nbody: {}",
                String::from_utf8_lossy(&hit.body)
            );
        }
        assert!(
            python_verify(dir, hit, &bad, standard).is_err(),
            "standardwebhooks accepted a tampered {what}"
        );
    }
    if node_available() {
        if let Err(e) = node_verify(dir, hit, &hit.body, zoom_secret) {
            panic!(
                "the Zoom-style verifier rejected {what}: {e}\nbody: {}",
                String::from_utf8_lossy(&hit.body)
            );
        }
        assert!(
            node_verify(dir, hit, &bad, zoom_secret).is_err(),
            "the Zoom-style verifier accepted a tampered {what}"
        );
    }
}

/// Samples whose events carry strings that need escaping, non-ASCII text and fractional
/// means (control characters are refused at ingest, so none can reach an event), in one window: two participant events, a meeting summary (the meeting ends in the
/// window) and a phone event.
fn awkward_samples(now: i64) -> Value {
    let names = [
        "Zoë \"Q\" O'Brien \\ / 😀 </script> \u{2028}\u{2029} \u{feff}",
        "山田 太郎 / ñandú",
    ];
    let mut samples: Vec<Value> = names
        .iter()
        .enumerate()
        .flat_map(|(i, name)| {
            [0, 1].map(|k| {
                json!({"kind": "participant_qos", "meeting_id": "m-ünï \"cødé\"",
                       "participant_id": format!("p{i}"), "user_id": format!("u{i}"), "user_name": name,
                       "timestamp": common::iso(now + 100 * k),
                       "metrics": {
                           "audio": {"bitrate": 64 + k, "latency": 50.5, "jitter": 10.1 + 0.1 * k as f64,
                                     "packet_loss": 0.005},
                           "video": {"bitrate": 100000, "latency": 60, "jitter": 15, "packet_loss": 0,
                                     "resolution": "1280x720", "frame_rate": 29.97},
                           "cpu_usage": 33.333}})
            })
        })
        .collect();
    samples.push(
        json!({"kind": "meeting_ended", "meeting_id": "m-ünï \"cødé\"",
                        "timestamp": common::iso(now + 500)}),
    );
    samples.push(
        json!({"kind": "call_qos", "call_id": "c-\u{e9}\u{301}", "direction": "outbound",
                        "caller_number": "+1 (555) 0100", "callee_number": "\"ext\" 12\\34",
                        "codec": "G.711µ", "timestamp": common::iso(now),
                        "metrics": {"bitrate": 64, "latency": 120.25, "jitter": 7.125,
                                    "packet_loss": 1.5, "mos": 4.1}}),
    );
    json!(samples)
}

/// The manual clock starts at the current minute, so the signed timestamps are within the
/// library's 5-minute tolerance of the real time.
async fn fixture() -> Fixture {
    Fixture::start(vec![("webhook.allow_private_networks", "true")]).await
}

#[tokio::test]
async fn deliveries_verify_with_the_standard_webhooks_library_and_a_zoom_style_verifier() {
    let f = fixture().await;
    let dir = tempfile::tempdir().unwrap();

    // One subscription with a generated `whsec_` secret (validated afterwards), one with a
    // secret of the user's own.
    let generated_receiver = Receiver::start().await;
    let (status, w) = f
        .create(json!({"url": generated_receiver.url(), "events": ALL_EVENTS}))
        .await;
    assert_eq!(status, 201, "{w}");
    let generated = w["secret_token"].as_str().unwrap().to_string();
    generated_receiver.set_secret(&generated);
    let validate = format!(
        "{}/{}/validate",
        f.webhooks_path(),
        w["id"].as_str().unwrap()
    );
    let (status, v) = f.call(Method::POST, &validate, None).await;
    assert_eq!(status, 200, "{v}");
    let own_receiver = Receiver::start().await;
    f.subscribe(&own_receiver.url(), RECEIVER_SECRET, &ALL_EVENTS)
        .await;

    let r = f
        .app
        .post_samples(&f.account, awkward_samples(f.now_ms()))
        .await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    f.advance_to_window_end();

    for (receiver, standard, zoom) in [
        (
            &generated_receiver,
            Key::Whsec(&generated),
            generated.as_str(),
        ),
        (&own_receiver, Key::Bytes(RECEIVER_SECRET), RECEIVER_SECRET),
    ] {
        let hits = receiver.wait_for_hits(4, Duration::from_secs(10)).await;
        let mut kinds: Vec<String> = hits
            .iter()
            .map(|h| h.event["event"].as_str().unwrap().to_string())
            .collect();
        kinds.sort();
        assert_eq!(
            kinds,
            [PARTICIPANT, PARTICIPANT, SUMMARY, PHONE],
            "{kinds:?}"
        );
        for hit in &hits {
            assert_verifies(dir.path(), hit, standard, zoom);
        }
    }
}

#[tokio::test]
async fn after_a_rotation_webhook_signature_carries_both_secrets_and_x_zm_signature_the_new_one() {
    let f = fixture().await;
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let w = f
        .subscribe(&receiver.url(), RECEIVER_SECRET, &[PHONE])
        .await;
    let id = w["id"].as_str().unwrap();
    let rotate = format!("{}/{id}/rotate_secret", f.webhooks_path());
    let (status, v) = f.call(Method::POST, &rotate, None).await;
    assert_eq!(status, 200, "{v}");
    let new = v["secret_token"].as_str().unwrap().to_string();
    assert!(new.starts_with("whsec_") && new.len() == 50, "{new}");
    assert_ne!(new, RECEIVER_SECRET);

    let hit = f.emit_one_and_receive(&receiver).await;
    let signatures: Vec<String> = hit
        .header("webhook-signature")
        .split(' ')
        .map(str::to_string)
        .collect();
    assert_eq!(signatures.len(), 2, "{signatures:?}");
    assert!(
        signatures.iter().all(|s| s.starts_with("v1,")),
        "{signatures:?}"
    );
    // New first, then old.
    let ts: i64 = hit.header("webhook-timestamp").parse().unwrap();
    assert_eq!(
        signatures[0],
        qss_delivery::signing::standard_signature(&new, &hit.delivery_id, ts, &hit.body)
    );

    // A receiver on either secret verifies `webhook-signature`; `x-zm-signature` is the new
    // secret's only.
    assert_verifies(dir.path(), &hit, Key::Whsec(&new), &new);
    assert_verifies(dir.path(), &hit, Key::Bytes(RECEIVER_SECRET), &new);
    if node_available() {
        assert!(
            node_verify(dir.path(), &hit, &hit.body, RECEIVER_SECRET).is_err(),
            "x-zm-signature still uses the old secret"
        );
    }

    // During the overlap a handshake answered with either secret passes.
    let validate = format!("{}/{id}/validate", f.webhooks_path());
    for secret in [RECEIVER_SECRET, new.as_str()] {
        receiver.set_secret(secret);
        let (status, v) = f.call(Method::POST, &validate, None).await;
        assert_eq!(status, 200, "{v}");
    }

    // A chosen secret is taken as given.
    let (status, v) = f
        .call(
            Method::POST,
            &rotate,
            Some(json!({"secret_token": "my-own-rotated-secret-42"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["secret_token"], "my-own-rotated-secret-42");
}
