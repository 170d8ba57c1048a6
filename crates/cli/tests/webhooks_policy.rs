//! Webhook subscriptions and delivery policy end to end (SPEC 7.1, 7.2, 7.4, 7.5): an
//! in-process server with a manual clock delivers to scriptable receivers on 127.0.0.1.
//!
//! Timing: `next_attempt_at` and attempt times come from the manual clock, so a scheduled retry
//! becomes due only when a test moves the clock; the attempts themselves (and the timeouts) take
//! real time. The retry schedule is `1,1,1` seconds, so moving the clock by 2 s makes any
//! scheduled retry due (1 s ± 10 % jitter). Checks that something does NOT happen wait a fixed
//! 800 ms of real time, several dispatcher polls (250 ms), after making it due.

mod common;
mod webhook_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use webhook_support::{
    Answer, Fixture, Handshake, Hit, PHONE, RECEIVER_SECRET, Receiver, WINDOW_MS, ms,
};

const SETTLE: Duration = Duration::from_millis(800);
const WAIT: Duration = Duration::from_secs(10);

/// A server that may deliver to loopback over http, retrying after 1 s three times.
async fn fixture() -> Fixture {
    fixture_with(vec![]).await
}

async fn fixture_with(extra: Vec<(&str, &str)>) -> Fixture {
    let mut flags = vec![
        ("webhook.allow_private_networks", "true"),
        ("webhook.retry_schedule_seconds", "1,1,1"),
        ("webhook.timeout_ms", "1500"),
    ];
    flags.extend(extra);
    Fixture::start(flags).await
}

/// A fixture, a receiver and an active subscription of it to phone events.
async fn subscribed() -> (Fixture, Receiver, String) {
    subscribed_with(vec![], json!({})).await
}

async fn subscribed_with(flags: Vec<(&str, &str)>, extra: Value) -> (Fixture, Receiver, String) {
    let f = fixture_with(flags).await;
    let receiver = Receiver::start().await;
    let mut body =
        json!({"url": receiver.url(), "events": [PHONE], "secret_token": RECEIVER_SECRET});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, w) = f.create(body).await;
    assert_eq!(status, 201, "{w}");
    let id = w["id"].as_str().unwrap().to_string();
    (f, receiver, id)
}

fn is_status(status: &'static str) -> impl Fn(&Value) -> bool {
    move |d: &Value| d["status"] == status
}

/// Pending after `n` attempts, with the next one scheduled.
fn pending_after(n: i64) -> impl Fn(&Value) -> bool {
    move |d: &Value| {
        d["status"] == "pending" && d["attempt_count"] == n && d["next_attempt_at"].is_string()
    }
}

// ---------------------------------------------------------------------------------------------
// Handshake (SPEC 7.2) and creation (7.1)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_receiver_that_answers_the_handshake_correctly_gets_an_active_subscription() {
    let f = fixture().await;
    let receiver = Receiver::start().await;
    let (status, w) = f
        .create(json!({"url": receiver.url(), "events": [PHONE, "qss.meeting_qos_summary"],
                       "secret_token": RECEIVER_SECRET, "description": "ops", "max_age_seconds": 600}))
        .await;
    assert_eq!(status, 201, "{w}");
    assert_eq!(w["status"], "active");
    assert_eq!(w["secret_token"], RECEIVER_SECRET);
    assert_eq!(w["url"], receiver.url());
    assert_eq!(w["description"], "ops");
    assert_eq!(w["max_age_seconds"], 600);
    assert!(w["id"].as_str().unwrap().starts_with("wh_"), "{w}");
    assert!(w["validated_at"].is_string(), "{w}");

    // The handshake was one signed POST under an `hs_` id.
    let handshakes = receiver.handshakes();
    assert_eq!(handshakes.len(), 1);
    let (headers, body) = &handshakes[0];
    let h = |n: &str| headers.get(n).unwrap().to_str().unwrap().to_string();
    assert!(h("webhook-id").starts_with("hs_"), "{}", h("webhook-id"));
    assert_eq!(h("x-zm-request-id"), h("webhook-id"));
    let ts: i64 = h("x-zm-request-timestamp").parse().unwrap();
    assert_eq!(
        h("x-zm-signature"),
        qss_delivery::signing::zoom_signature(RECEIVER_SECRET, ts, body)
    );
    let v: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(v["event"], "endpoint.url_validation");
    assert!(
        v["payload"]["plainToken"]
            .as_str()
            .is_some_and(|p| !p.is_empty())
    );

    let (status, got) = f.webhook(w["id"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(got["status"], "active");
    assert!(
        got.get("secret_token").is_none(),
        "secret shown after creation: {got}"
    );
}

#[tokio::test]
async fn a_handshake_answered_wrongly_slowly_or_with_an_error_is_a_400_on_url_and_saves_nothing() {
    // The handshake has webhook.timeout_ms (500 ms here); the slow receiver takes 1.5 s.
    let f = fixture_with(vec![("webhook.timeout_ms", "500")]).await;
    let cases = [
        (
            "encryptedToken made with another secret",
            Handshake::WrongSecret,
        ),
        ("plainToken not echoed", Handshake::WrongPlainToken),
        ("too slow", Handshake::Slow(Duration::from_millis(1500))),
        ("HTTP 500", Handshake::Status(500)),
        ("HTTP 204", Handshake::Status(204)),
    ];
    for (name, mode) in cases {
        let receiver = Receiver::start().await;
        receiver.set_handshake(mode);
        let started = Instant::now();
        let (status, v) = f
            .create(
                json!({"url": receiver.url(), "events": [PHONE], "secret_token": RECEIVER_SECRET}),
            )
            .await;
        assert_eq!(status, 400, "{name}: {v}");
        assert_eq!(v["code"], 300, "{name}: {v}");
        assert_eq!(v["errors"][0]["field"], "url", "{name}: {v}");
        assert!(
            v["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{name}: {v}"
        );
        assert_eq!(
            receiver.handshakes().len(),
            1,
            "{name}: the handshake was not sent"
        );
        assert!(
            started.elapsed() < Duration::from_millis(1400),
            "{name}: the handshake was not cut at the timeout ({:?})",
            started.elapsed()
        );
    }
    assert!(
        f.list_webhooks().await.is_empty(),
        "a failed handshake saved a subscription"
    );
}

#[tokio::test]
async fn a_subscription_created_without_a_secret_receives_nothing_until_validated() {
    let f = fixture().await;
    let receiver = Receiver::start().await;
    let (status, w) = f
        .create(json!({"url": receiver.url(), "events": [PHONE]}))
        .await;
    assert_eq!(status, 201, "{w}");
    assert_eq!(w["status"], "pending_validation");
    assert!(w["validated_at"].is_null(), "{w}");
    let secret = w["secret_token"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(secret.len(), 50, "{secret}");
    assert!(
        receiver.handshakes().is_empty(),
        "no handshake without a secret"
    );
    let id = w["id"].as_str().unwrap().to_string();

    // Events committed while it is pending are never delivered to it.
    let (pending_calls, _) = f.emit_calls(1).await;
    receiver
        .assert_stays_at(
            0,
            SETTLE,
            "a pending_validation subscription received an event",
        )
        .await;

    // A validation the receiver answers with another secret fails and changes nothing.
    let path = format!("{}/{id}/validate", f.webhooks_path());
    let (status, v) = f.call(Method::POST, &path, None).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["errors"][0]["field"], "url", "{v}");
    assert_eq!(f.webhook(&id).await.1["status"], "pending_validation");

    // With the generated secret the validation passes and events flow.
    receiver.set_secret(&secret);
    let (status, v) = f.call(Method::POST, &path, None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "active");
    assert!(v["validated_at"].is_string(), "{v}");
    let hit = f.emit_one_and_receive(&receiver).await;
    assert_ne!(
        hit.event["payload"]["object"]["call_id"], pending_calls[0],
        "the event committed while pending was delivered"
    );
    let ts: i64 = hit.header("webhook-timestamp").parse().unwrap();
    assert_eq!(
        hit.header("webhook-signature"),
        qss_delivery::signing::standard_signature(&secret, &hit.delivery_id, ts, &hit.body)
    );
    receiver
        .assert_stays_at(1, SETTLE, "only the event after validation is delivered")
        .await;
}

// ---------------------------------------------------------------------------------------------
// Delivery policy (SPEC 7.4)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_delivery_answered_500_is_retried_under_the_same_id_and_then_succeeds() {
    let (f, receiver, wid) = subscribed().await;
    receiver.script([Answer::status(500)]);
    let first = f.emit_one_and_receive(&receiver).await;
    let d = f
        .wait_delivery(&wid, &first.delivery_id, "pending", pending_after(1))
        .await;
    assert_eq!(d["last_attempt"]["http_status"], 500, "{d}");
    assert_eq!(d["last_attempt"]["error"], "http_status", "{d}");
    // 1 s ± 10 %, from the end of the attempt (manual clock: the attempt took no clock time).
    let wait = ms(&d["next_attempt_at"]) - ms(&d["last_attempt"]["at"]);
    assert!(
        (0..=2000).contains(&wait),
        "retry scheduled {wait} ms later: {d}"
    );

    f.app.clock.advance_ms(2000);
    let hits = receiver.wait_for_hits(2, WAIT).await;
    let second = &hits[1];
    assert_eq!(
        second.delivery_id, first.delivery_id,
        "a retry carries the same webhook-id"
    );
    assert_eq!(second.header("x-zm-request-id"), first.delivery_id);
    assert_eq!(second.body, first.body, "a retry sends the same body");
    assert!(
        second.header("webhook-timestamp").parse::<i64>().unwrap()
            > first.header("webhook-timestamp").parse::<i64>().unwrap(),
        "each attempt is signed with its own time"
    );

    let d = f
        .wait_delivery(
            &wid,
            &first.delivery_id,
            "succeeded",
            is_status("succeeded"),
        )
        .await;
    assert_eq!(d["attempt_count"], 2, "{d}");
    assert!(d["next_attempt_at"].is_null(), "{d}");
    let attempts = d["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{d}");
    assert_eq!(attempts[0]["http_status"], 500);
    assert_eq!(attempts[0]["response_body"], "answered 500");
    assert_eq!(attempts[1]["http_status"], 200);
    assert!(attempts[1]["error"].is_null(), "{d}");
    receiver
        .assert_stays_at(2, SETTLE, "a succeeded delivery is not attempted again")
        .await;
}

#[tokio::test]
async fn a_404_fails_at_once_and_is_not_retried() {
    let (f, receiver, wid) = subscribed().await;
    receiver.set_default(Answer::status(404));
    let hit = f.emit_one_and_receive(&receiver).await;
    let d = f
        .wait_delivery(&wid, &hit.delivery_id, "failed", is_status("failed"))
        .await;
    assert_eq!(d["attempt_count"], 1, "{d}");
    assert_eq!(d["last_attempt"]["http_status"], 404, "{d}");
    assert!(d["next_attempt_at"].is_null(), "{d}");
    f.app.clock.advance_ms(5000);
    receiver
        .assert_stays_at(1, SETTLE, "a 404 was retried")
        .await;
}

#[tokio::test]
async fn a_410_disables_the_subscription() {
    let (f, receiver, wid) = subscribed().await;
    receiver.set_default(Answer::status(410));
    let hit = f.emit_one_and_receive(&receiver).await;
    let w = f
        .wait_webhook(&wid, "disabled", |w| w["status"] == "disabled")
        .await;
    assert_eq!(w["status"], "disabled");
    let d = f.delivery(&wid, &hit.delivery_id).await;
    assert_eq!(d["status"], "failed", "{d}");
    assert_eq!(d["attempt_count"], 1, "{d}");
    assert_eq!(d["last_attempt"]["http_status"], 410, "{d}");

    // A disabled subscription gets no new deliveries.
    f.emit_calls(1).await;
    f.app.clock.advance_ms(5000);
    receiver
        .assert_stays_at(1, SETTLE, "a disabled subscription received an event")
        .await;
    assert_eq!(f.deliveries(&wid).await.len(), 1);
}

#[tokio::test]
async fn a_429_with_retry_after_is_retried_no_sooner_than_asked() {
    let (f, receiver, wid) = subscribed().await;
    receiver.script([Answer::status(429).header("retry-after", "2")]);
    let first = f.emit_one_and_receive(&receiver).await;
    let d = f
        .wait_delivery(&wid, &first.delivery_id, "pending", pending_after(1))
        .await;
    assert_eq!(d["last_attempt"]["http_status"], 429, "{d}");
    // Exactly the asked time, not the 1 s schedule: the attempt took no manual-clock time.
    assert_eq!(
        ms(&d["next_attempt_at"]) - ms(&d["last_attempt"]["at"]),
        2000,
        "{d}"
    );

    f.app.clock.advance_ms(1000);
    receiver
        .assert_stays_at(1, SETTLE, "retried before Retry-After elapsed")
        .await;
    f.app.clock.advance_ms(1000);
    receiver.wait_for_hits(2, WAIT).await;
    let d = f
        .wait_delivery(
            &wid,
            &first.delivery_id,
            "succeeded",
            is_status("succeeded"),
        )
        .await;
    let attempts = d["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{d}");
    assert!(
        ms(&attempts[1]["at"]) - ms(&attempts[0]["at"]) >= 2000,
        "second attempt sooner than Retry-After: {d}"
    );
}

#[tokio::test]
async fn a_hanging_endpoint_is_cut_at_the_timeout_and_retried() {
    let (f, receiver, wid) = subscribed_with(vec![("webhook.timeout_ms", "500")], json!({})).await;
    receiver.script([Answer::status(200).after(Duration::from_secs(5))]);
    let first = f.emit_one_and_receive(&receiver).await;
    let d = f
        .wait_delivery(&wid, &first.delivery_id, "pending", pending_after(1))
        .await;
    let cut_after = first.arrived.elapsed();
    assert_eq!(d["last_attempt"]["error"], "timeout", "{d}");
    assert!(d["last_attempt"]["http_status"].is_null(), "{d}");
    let duration = d["last_attempt"]["duration_ms"].as_i64().unwrap();
    assert!(
        (400..2000).contains(&duration),
        "attempt lasted {duration} ms with a 500 ms timeout: {d}"
    );
    assert!(
        cut_after < Duration::from_secs(4),
        "recorded only after {cut_after:?}"
    );

    f.app.clock.advance_ms(2000);
    let hits = receiver.wait_for_hits(2, WAIT).await;
    assert_eq!(hits[1].delivery_id, first.delivery_id);
    let d = f
        .wait_delivery(
            &wid,
            &first.delivery_id,
            "succeeded",
            is_status("succeeded"),
        )
        .await;
    assert_eq!(d["attempt_count"], 2, "{d}");
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_fails_the_delivery() {
    let (f, receiver, wid) = subscribed().await;
    let target = Receiver::start().await;
    receiver.script([
        Answer::status(301).header("location", &target.url()),
        Answer::status(307).header("location", &target.url()),
    ]);
    f.emit_calls(2).await;
    let hits = receiver.wait_for_hits(2, WAIT).await;
    for hit in &hits {
        let d = f
            .wait_delivery(&wid, &hit.delivery_id, "failed", is_status("failed"))
            .await;
        assert_eq!(d["attempt_count"], 1, "{d}");
        let code = d["last_attempt"]["http_status"].as_u64().unwrap();
        assert!(code == 301 || code == 307, "{d}");
    }
    f.app.clock.advance_ms(5000);
    target
        .assert_stays_at(0, SETTLE, "the Location target was requested")
        .await;
    receiver
        .assert_stays_at(2, Duration::ZERO, "a 3xx was retried")
        .await;
}

#[tokio::test]
async fn a_delivery_older_than_max_age_ends_expired() {
    let (f, receiver, wid) = subscribed_with(vec![], json!({"max_age_seconds": 60})).await;
    receiver.set_default(Answer::status(500));
    let first = f.emit_one_and_receive(&receiver).await;
    f.wait_delivery(&wid, &first.delivery_id, "pending", pending_after(1))
        .await;
    // Past max_age between attempts: the retry is due, and the delivery is too old.
    f.app.clock.advance_ms(61_000);
    let d = f
        .wait_delivery(&wid, &first.delivery_id, "expired", is_status("expired"))
        .await;
    assert!(d["next_attempt_at"].is_null(), "{d}");
    f.app.clock.advance_ms(5000);
    let n = receiver.hit_count();
    receiver
        .assert_stays_at(n, SETTLE, "an expired delivery was attempted again")
        .await;
}

#[tokio::test]
async fn no_attempt_is_made_once_a_delivery_is_older_than_max_age() {
    let (f, receiver, wid) = subscribed_with(vec![], json!({"max_age_seconds": 60})).await;
    receiver.set_default(Answer::status(500));
    let first = f.emit_one_and_receive(&receiver).await;
    f.wait_delivery(&wid, &first.delivery_id, "pending", pending_after(1))
        .await;
    f.app.clock.advance_ms(61_000);
    f.wait_delivery(&wid, &first.delivery_id, "expired", is_status("expired"))
        .await;
    receiver
        .assert_stays_at(
            1,
            Duration::ZERO,
            "an attempt was made at an age over max_age_seconds",
        )
        .await;
}

// ---------------------------------------------------------------------------------------------
// Delete, manual retry and replay (SPEC 7.1, 7.5)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn deleting_a_subscription_cancels_its_pending_deliveries() {
    let (f, receiver, wid) = subscribed().await;
    receiver.set_default(Answer::status(500));
    let first = f.emit_one_and_receive(&receiver).await;
    f.wait_delivery(&wid, &first.delivery_id, "pending", pending_after(1))
        .await;

    let path = format!("{}/{wid}", f.webhooks_path());
    let (status, _) = f.call(Method::DELETE, &path, None).await;
    assert_eq!(status, 204);
    let (status, v) = f.webhook(&wid).await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["code"], 3001, "{v}");

    // The retry would be due now; and new events find no subscription.
    f.app.clock.advance_ms(3000);
    f.emit_calls(1).await;
    receiver
        .assert_stays_at(1, SETTLE, "a deleted subscription received a delivery")
        .await;
}

/// A subscription with a backlog of `BACKLOG` phone events at a receiver that takes 300 ms per
/// request, so that at any moment some are in flight and many are pending. Returns once the
/// first attempts have arrived.
async fn busy_subscription() -> (Fixture, Receiver, String) {
    let (f, receiver, wid) = subscribed().await;
    receiver.set_default(Answer::status(200).after(Duration::from_millis(300)));
    f.emit_calls(BACKLOG).await;
    receiver.wait_for_hits(CAP, WAIT).await;
    (f, receiver, wid)
}

const BACKLOG: usize = 100;
/// `webhook.max_in_flight_per_endpoint`.
const CAP: usize = 16;

/// The deliveries a receiver may still get once a subscription stops taking new attempts:
/// those already in flight, at most the cap, some of which may not have arrived yet. Anything
/// beyond that was started afterwards.
async fn assert_no_attempt_starts_after(receiver: &Receiver, arrived_before: usize, what: &str) {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let total = receiver.hit_count();
    assert!(
        total <= arrived_before + CAP,
        "{} deliveries started after the subscription was {what} ({arrived_before} had \
         arrived before, at most {CAP} were in flight)",
        total - arrived_before - CAP
    );
}

#[tokio::test]
async fn no_attempt_starts_after_a_subscription_is_deleted() {
    let (f, receiver, wid) = busy_subscription().await;
    let arrived_before = receiver.hit_count();
    let path = format!("{}/{wid}", f.webhooks_path());
    let (status, _) = f.call(Method::DELETE, &path, None).await;
    assert_eq!(status, 204);
    assert_no_attempt_starts_after(&receiver, arrived_before, "deleted").await;
}

#[tokio::test]
async fn a_paused_subscription_holds_its_deliveries_until_reactivated() {
    let (f, receiver, wid) = busy_subscription().await;
    let arrived_before = receiver.hit_count();
    let path = format!("{}/{wid}", f.webhooks_path());
    let (status, v) = f
        .call(Method::PATCH, &path, Some(json!({"status": "paused"})))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_no_attempt_starts_after(&receiver, arrived_before, "paused").await;

    // Held, not lost: reactivation (which runs the handshake) resumes them.
    let (status, v) = f
        .call(Method::PATCH, &path, Some(json!({"status": "active"})))
        .await;
    assert_eq!(status, 200, "{v}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.event_ids().len() < BACKLOG && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        receiver.event_ids().len(),
        BACKLOG,
        "events lost by a pause"
    );
}

#[tokio::test]
async fn retrying_a_finished_delivery_makes_exactly_one_new_attempt() {
    let (f, receiver, wid) = subscribed().await;
    receiver.script([Answer::status(404), Answer::status(500)]);
    let first = f.emit_one_and_receive(&receiver).await;
    f.wait_delivery(&wid, &first.delivery_id, "failed", is_status("failed"))
        .await;
    let retry = format!(
        "{}/{wid}/deliveries/{}/retry",
        f.webhooks_path(),
        first.delivery_id
    );

    // failed → 202, one attempt (answered 500), and no automatic retry after it.
    let (status, v) = f.call(Method::POST, &retry, None).await;
    assert_eq!(status, 202, "{v}");
    let hits = receiver.wait_for_hits(2, WAIT).await;
    assert_eq!(hits[1].delivery_id, first.delivery_id);
    let d = f
        .wait_delivery(&wid, &first.delivery_id, "failed again", |d| {
            d["attempt_count"] == 2 && d["status"] == "failed"
        })
        .await;
    assert_eq!(d["last_attempt"]["http_status"], 500, "{d}");
    f.app.clock.advance_ms(5000);
    receiver
        .assert_stays_at(
            2,
            SETTLE,
            "a manual retry was followed by automatic retries",
        )
        .await;

    // Again (answered 200): succeeded; and a succeeded delivery may be retried once more.
    let (status, _) = f.call(Method::POST, &retry, None).await;
    assert_eq!(status, 202);
    f.wait_delivery(&wid, &first.delivery_id, "succeeded", |d| {
        d["attempt_count"] == 3 && d["status"] == "succeeded"
    })
    .await;
    let (status, _) = f.call(Method::POST, &retry, None).await;
    assert_eq!(status, 202);
    receiver.wait_for_hits(4, WAIT).await;
    f.wait_delivery(&wid, &first.delivery_id, "succeeded", |d| {
        d["attempt_count"] == 4 && d["status"] == "succeeded"
    })
    .await;

    let unknown = format!("{}/{wid}/deliveries/dlv_unknown/retry", f.webhooks_path());
    let (status, v) = f.call(Method::POST, &unknown, None).await;
    assert_eq!(status, 404, "{v}");
}

#[tokio::test]
async fn replay_queues_new_deliveries_of_the_stored_events() {
    let (f, receiver, wid) = subscribed().await;
    let t0 = f.now_ms();
    f.emit_calls(3).await;
    let original = receiver.wait_for_hits(3, WAIT).await;
    let events: std::collections::HashSet<String> = original.iter().map(Hit::event_id).collect();
    assert_eq!(events.len(), 3);

    let replay = format!("{}/{wid}/replay", f.webhooks_path());
    let range = json!({"from": common::iso(t0 - WINDOW_MS), "to": common::iso(f.now_ms() + 1000)});
    let (status, v) = f.call(Method::POST, &replay, Some(range.clone())).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v, json!({"queued": 3}));
    let hits = receiver.wait_for_hits(6, WAIT).await;
    let replayed = &hits[3..];
    let replayed_events: std::collections::HashSet<String> =
        replayed.iter().map(Hit::event_id).collect();
    assert_eq!(
        replayed_events, events,
        "a replay re-sends the same event ids"
    );
    for h in replayed {
        assert!(
            original.iter().all(|o| o.delivery_id != h.delivery_id),
            "a replay is a new delivery"
        );
    }

    // Only the subscription's event types count; a paused subscription cannot replay.
    let mut other = range.clone();
    other["event"] = json!("qss.meeting_qos_summary");
    let (status, v) = f.call(Method::POST, &replay, Some(other)).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v, json!({"queued": 0}));
    let path = format!("{}/{wid}", f.webhooks_path());
    let (status, v) = f
        .call(Method::PATCH, &path, Some(json!({"status": "paused"})))
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = f.call(Method::POST, &replay, Some(range)).await;
    assert_eq!(status, 409, "{v}");
    receiver
        .assert_stays_at(6, SETTLE, "replayed more than asked")
        .await;
}

// ---------------------------------------------------------------------------------------------
// SSRF (SPEC 7.4), loopback targets only
// ---------------------------------------------------------------------------------------------

/// A TCP listener that only counts the connections it gets.
async fn counting_listener(addr: &str) -> Option<(SocketAddr, Arc<AtomicUsize>)> {
    let listener = tokio::net::TcpListener::bind(addr).await.ok()?;
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    Some((addr, count))
}

#[tokio::test]
async fn loopback_targets_and_plain_http_are_refused_when_private_networks_are_not_allowed() {
    // Defaults: webhook.allow_private_networks = false.
    let f = Fixture::start(vec![]).await;
    let (v4, v4_hits) = counting_listener("127.0.0.1:0").await.unwrap();
    let p = v4.port();
    let mut urls = vec![
        format!("https://127.0.0.1:{p}/x"),
        format!("https://localhost:{p}/x"),
        format!("https://127.1:{p}/x"),
        format!("https://2130706433:{p}/x"),
        format!("https://0x7f.0.0.1:{p}/x"),
        format!("https://[::ffff:127.0.0.1]:{p}/x"),
        format!("http://127.0.0.1:{p}/x"),
    ];
    // IPv6 loopback, where the machine has it.
    let v6 = counting_listener("[::1]:0").await;
    if let Some((addr, _)) = &v6 {
        urls.push(format!("https://[::1]:{}/x", addr.port()));
        urls.push(format!("http://[::1]:{}/x", addr.port()));
    } else {
        urls.push("https://[::1]/x".to_string());
        eprintln!("note: no IPv6 loopback here; [::1] is checked without a listener");
    }
    for url in &urls {
        for secret in [Some(RECEIVER_SECRET), None] {
            let mut body = json!({"url": url, "events": [PHONE]});
            if let Some(s) = secret {
                body["secret_token"] = json!(s);
            }
            let (status, v) = f.create(body).await;
            assert_eq!(status, 400, "{url} (secret: {}): {v}", secret.is_some());
            assert_eq!(v["code"], 300, "{url}: {v}");
            assert_eq!(v["errors"][0]["field"], "url", "{url}: {v}");
        }
    }
    assert!(f.list_webhooks().await.is_empty());
    assert_eq!(
        v4_hits.load(Ordering::SeqCst),
        0,
        "qss connected to 127.0.0.1"
    );
    if let Some((_, v6_hits)) = v6 {
        assert_eq!(v6_hits.load(Ordering::SeqCst), 0, "qss connected to [::1]");
    }
}
