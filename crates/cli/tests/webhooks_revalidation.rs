//! Periodic re-validation (SPEC 7.2): the handshake is repeated every
//! `webhook.revalidate_hours`; a failure is retried after 5, 20 and 60 minutes, then at the
//! normal period; six failures in a row disable the subscription, and a success resets the
//! count. The manual clock makes re-validations due; the dispatcher looks every second.

mod common;
mod webhook_support;

use std::time::Duration;

use webhook_support::{Fixture, Handshake, RECEIVER_SECRET, Receiver};

const HOUR_MS: i64 = 3_600_000;
const MINUTE_MS: i64 = 60_000;

/// The subscription's status, with a fresh token (hours pass on the manual clock).
async fn status(f: &Fixture, id: &str) -> String {
    let token = f.app.token(&f.account).await;
    let r = f
        .app
        .get(&token, &format!("{}/{id}", f.webhooks_path()))
        .await;
    let v: serde_json::Value = r.json().await.unwrap();
    v["status"].as_str().unwrap_or("").to_string()
}

/// Moves the clock by `ms` and waits until the receiver has seen `handshakes` handshakes.
async fn advance_until_handshakes(f: &Fixture, rx: &Receiver, ms: i64, handshakes: usize) {
    f.app.clock.advance_ms(ms);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while rx.handshakes().len() < handshakes {
        assert!(
            std::time::Instant::now() < deadline,
            "handshake {handshakes} never came"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the dispatcher record the outcome.
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn six_failed_revalidations_in_a_row_disable_a_subscription_and_a_success_resets_the_count() {
    let f = Fixture::start(vec![
        ("webhook.allow_private_networks", "true"),
        ("webhook.timeout_ms", "500"),
    ])
    .await;
    let rx = Receiver::start().await;
    rx.set_secret(RECEIVER_SECRET);
    let w = f
        .subscribe(&rx.url(), RECEIVER_SECRET, &["qss.phone_call_qos"])
        .await;
    let id = w["id"].as_str().unwrap().to_string();
    assert_eq!(rx.handshakes().len(), 1, "the creation handshake");

    // Nothing happens before the period.
    f.app.clock.advance_ms(71 * HOUR_MS);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.handshakes().len(), 1);

    // A success at 72 h keeps it active.
    advance_until_handshakes(&f, &rx, HOUR_MS + 1000, 2).await;
    assert_eq!(status(&f, &id).await, "active");

    // Now the receiver answers wrongly: retries after 5, 20, 60 minutes, then the period.
    rx.set_handshake(Handshake::WrongSecret);
    advance_until_handshakes(&f, &rx, 72 * HOUR_MS, 3).await; // failure 1
    advance_until_handshakes(&f, &rx, 5 * MINUTE_MS, 4).await; // failure 2
    advance_until_handshakes(&f, &rx, 20 * MINUTE_MS, 5).await; // failure 3
    advance_until_handshakes(&f, &rx, 60 * MINUTE_MS, 6).await; // failure 4
    // After the third retry, the next try waits for the normal period.
    f.app.clock.advance_ms(60 * MINUTE_MS);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        rx.handshakes().len(),
        6,
        "no retry before the period after the 5/20/60 minute retries"
    );
    advance_until_handshakes(&f, &rx, 72 * HOUR_MS, 7).await; // failure 5
    assert_eq!(
        status(&f, &id).await,
        "active",
        "deliveries continue meanwhile"
    );

    // A success resets the count: five more failures do not disable it.
    rx.set_handshake(Handshake::Correct);
    advance_until_handshakes(&f, &rx, 72 * HOUR_MS, 8).await;
    rx.set_handshake(Handshake::WrongSecret);
    let steps = [
        72 * HOUR_MS,
        5 * MINUTE_MS,
        20 * MINUTE_MS,
        60 * MINUTE_MS,
        72 * HOUR_MS,
    ];
    for (i, step) in steps.iter().enumerate() {
        advance_until_handshakes(&f, &rx, *step, 9 + i).await;
    }
    assert_eq!(
        status(&f, &id).await,
        "active",
        "five failures after a success"
    );

    // The sixth failure in a row disables it.
    advance_until_handshakes(&f, &rx, 72 * HOUR_MS, 14).await;
    assert_eq!(status(&f, &id).await, "disabled");
}
