//! The in-flight cap is per endpoint (SPEC 7.4): subscriptions that share a URL share its
//! `webhook.max_in_flight_per_endpoint` attempts.

mod common;
mod webhook_support;

use std::time::Duration;

use webhook_support::{Answer, Fixture, RECEIVER_SECRET, Receiver};

#[tokio::test]
async fn two_subscriptions_on_one_url_share_its_in_flight_cap() {
    let f = Fixture::start(vec![("webhook.allow_private_networks", "true")]).await;
    let rx = Receiver::start().await;
    rx.set_secret(RECEIVER_SECRET);
    f.subscribe(&rx.url(), RECEIVER_SECRET, &["qss.phone_call_qos"])
        .await;
    f.subscribe(&rx.url(), RECEIVER_SECRET, &["qss.phone_call_qos"])
        .await;
    // Every delivery is held for 2 s (under the 3 s timeout).
    rx.set_default(Answer::status(200).after(Duration::from_secs(2)));

    f.emit_calls(30).await; // 60 deliveries to one URL
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.hit_count(), 16, "one endpoint, one cap of 16 in flight");
    // The rest follow as slots free up.
    rx.wait_for_hits(60, Duration::from_secs(15)).await;
}
