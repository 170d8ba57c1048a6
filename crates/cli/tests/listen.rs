//! `qss listen` as a user runs it: the real binary answers the handshake of a real server,
//! prints each delivered event as a JSON line, and refuses a badly signed request with 401.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

const SECRET: &str = "listen-test-secret-0123456789";

/// The `qss listen` child, killed when the test ends, also when it fails half-way.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn qss_listen_validates_receives_and_prints_events_and_refuses_bad_signatures() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_qss"))
            .args(["listen", "--port", &port.to_string(), "--secret", SECRET])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}/qss");
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if client.get(&url).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A request signed with another secret is refused.
    let body = br#"{"event":"qss.phone_call_qos"}"#;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut req = client.post(&url).body(body.to_vec());
    for (k, v) in qss_delivery::signing::headers(
        "test",
        "dlv_x",
        now,
        body,
        "another-secret-0123456789",
        None,
    ) {
        req = req.header(k, v);
    }
    assert_eq!(req.send().await.unwrap().status(), 401);

    // A real server subscribes it (handshake) and delivers a phone event to it.
    let app = common::spawn_app_with(vec![("webhook.allow_private_networks", "true")]).await;
    let account = app.create_account("business", true).await;
    let token = app.token(&account).await;
    let r = app
        .client
        .post(format!(
            "{}/v2/accounts/{}/qss/webhooks",
            app.base, account.account_id
        ))
        .bearer_auth(&token)
        .json(&json!({"url": url, "events": ["qss.phone_call_qos"], "secret_token": SECRET}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    app.patch_settings(
        &account,
        &token,
        json!({"aggregation_interval_seconds": 10, "aggregation_grace_seconds": 0}),
    )
    .await;
    let t0 = qss_api::Clock::now_ms(app.clock.as_ref());
    let r = app
        .post_samples(
            &account,
            json!([{"kind": "call_qos", "call_id": "listen-call", "direction": "outbound",
                    "timestamp": common::iso(t0 + 500),
                    "metrics": {"bitrate": 32, "latency": 20, "jitter": 2, "packet_loss": 0}}]),
        )
        .await;
    assert_eq!(r.status(), 202);
    app.advance(10_000).await;

    let stdout = child.0.stdout.take().unwrap();
    let read = tokio::task::spawn_blocking(move || BufReader::new(stdout).lines().next());
    let line = match tokio::time::timeout(Duration::from_secs(10), read).await {
        Ok(line) => line.unwrap().expect("a line on stdout").unwrap(),
        Err(_) => {
            child.0.kill().unwrap();
            panic!("qss listen printed no event within 10 s");
        }
    };
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["event"], "qss.phone_call_qos");
    assert_eq!(event["payload"]["object"]["call_id"], "listen-call");
    assert_eq!(event["payload"]["object"]["quality"]["mos"], 4.39);
    child.0.kill().unwrap();
    let _ = child.0.wait();
}
