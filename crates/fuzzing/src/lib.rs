//! What each fuzz target runs (issue 7), shared by the cargo-fuzz targets in `fuzz/` and by
//! `tests/replay.rs`, which runs every input of `fuzz/corpus/<target>/` and
//! `fuzz/regressions/<target>/` through the same function in the ordinary test suite.
//!
//! Each entry point takes raw bytes and must never panic; a returned error is an answer, not a
//! finding. The code under test is the server's own: no copy of it lives here.

use qss_api::deliveries::DeliveryCursor;
use qss_api::events::Cursor;
use qss_domain::ingest::{BodyFormat, IngestLimits, parse_batch};
use qss_domain::{Sample, Settings};
use qss_engine::window::{ParticipantWindowAcc, WindowCtx};

/// A target's entry point: any bytes, no panic.
pub type Target = fn(&[u8]);

/// The targets, by name (the folder names under `fuzz/corpus/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("ingest_batch", ingest_batch),
    ("settings_patch", settings_patch),
    ("listen_verify", listen_verify),
    ("page_token", page_token),
];

const NOW_MS: i64 = 1_700_000_000_000;

/// Telemetry bodies (SPEC 4): the first byte picks JSON or NDJSON, the rest is the body. What
/// parses is aggregated into a window and scored, as the server would.
pub fn ingest_batch(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let format = if mode & 1 == 0 {
        BodyFormat::Json
    } else {
        BodyFormat::Ndjson
    };
    let limits = IngestLimits {
        max_samples: 10_000,
        max_sample_age_ms: 86_400_000,
    };
    let Ok(samples) = parse_batch(body, format, NOW_MS, &limits) else {
        return;
    };
    let thresholds = Settings::default().quality_thresholds;
    let mut window = ParticipantWindowAcc::new();
    for sample in &samples {
        if let Sample::ParticipantQos(p) = sample {
            window.add(p);
        }
    }
    if !window.is_empty() {
        let event = window.finish(&WindowCtx {
            meeting_id: "m",
            meeting_instance_id: "i",
            meeting_type: "meeting",
            participant_id: "p",
            window_start: NOW_MS,
            interval_seconds: 60,
            thresholds: &thresholds,
        });
        let mos = event.quality.mos.get();
        assert!((1.0..=4.5).contains(&mos), "MOS {mos} out of range");
        serde_json::to_vec(&event).expect("an event serializes");
    }
}

/// `PATCH .../qss/settings` bodies (SPEC 6): parsed as the API parses bodies, then applied
/// to the defaults. An accepted patch must give settings that validate again.
pub fn settings_patch(data: &[u8]) {
    let Ok(body) = qss_api::body::parse_json(data) else {
        return;
    };
    let current = Settings::default();
    if let Ok(updated) = qss_domain::settings_patch::apply_settings_patch(&current, &body) {
        let again = serde_json::to_value(&updated).expect("settings serialize");
        assert!(
            qss_domain::settings_patch::apply_settings_patch(&updated, &again).is_ok(),
            "accepted settings do not validate again: {again}"
        );
    }
}

/// `qss listen`'s check of a delivery's signatures (SPEC 7.3). The input is split on NUL
/// bytes into the five headers and the body; a leading byte's low bits ask for a correct
/// `x-zm-signature` and `webhook-signature`, so the checks behind them are reached too.
pub fn listen_verify(data: &[u8]) {
    const SECRET: &str = "fuzz-secret-0123456789";
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.splitn(6, |b| *b == 0);
    let mut next = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let (ts, mut zm, id, wts, mut wsig) = (next(), next(), next(), next(), next());
    let body = next().into_bytes();
    let now = ts.parse::<i64>().unwrap_or(0);
    if mode & 1 == 1
        && let Ok(t) = ts.parse::<i64>()
    {
        zm = qss_delivery::signing::zoom_signature(SECRET, t, &body);
    }
    if mode & 2 == 2
        && let Ok(t) = wts.parse::<i64>()
    {
        wsig = format!(
            "{wsig} {}",
            qss_delivery::signing::standard_signature(SECRET, &id, t, &body)
        );
    }
    let headers = [
        ("x-zm-request-timestamp", &ts),
        ("x-zm-signature", &zm),
        ("webhook-id", &id),
        ("webhook-timestamp", &wts),
        ("webhook-signature", &wsig),
    ];
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, v)| v.as_str())
    };
    let verdict = qss_delivery::signing::verify_request(SECRET, get, &body, now);
    if mode & 3 == 3 && ts.parse::<i64>().is_ok() && wts.parse::<i64>().is_ok() {
        assert_eq!(verdict, Ok(()), "correct signatures refused");
    }
}

/// `next_page_token` (SPEC 2.1). The first byte picks the input's meaning: a token as a
/// client sends it, or a payload that is signed first (as only the server can), so that the
/// decoding behind the signature check (expiry, account, the cursors' own fields) is reached.
pub fn page_token(data: &[u8]) {
    let key = [7u8; 32];
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = if mode & 1 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        qss_api::page_token::sign_raw(&key, rest)
    };
    for account in ["acct", "admin"] {
        let _ = qss_api::page_token::decode::<Cursor>(&key, account, NOW_MS, &token);
        let _ = qss_api::page_token::decode::<DeliveryCursor>(&key, account, NOW_MS, &token);
        let _ = qss_api::page_token::decode::<serde_json::Value>(&key, account, NOW_MS, &token);
    }
}
