//! The dashboard in a real browser (issue 6): Debian's Chromium, headless, driven through
//! chromedriver (WebDriver) against a whole server on 127.0.0.1. Each view is saved as a
//! 1280×800 screenshot under `<target>/tmp/dashboard-screenshots/`.
//!
//! Without Chromium and chromedriver (`apt-get install -y chromium chromium-driver`) the
//! browser test says it was skipped, except under `CI=true`, where `.ci/run` installs them.

mod common;
mod serve_support;
mod webhook_support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use qss_api::Clock;
use serde_json::{Value, json};
use webhook_support::{RECEIVER_SECRET, Receiver};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A child process (chromedriver, `qss demo`), killed with the test.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts chromedriver and a headless Chromium session at 1280×800; `None` (with a visible
/// "skipped") where they are not installed and CI is not set.
async fn browser() -> Option<(Killed, Client)> {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !std::path::Path::new(p).exists())
        .collect();
    if !missing.is_empty() {
        assert!(
            std::env::var("CI").is_err(),
            "CI=true but {missing:?} are missing (.ci/run installs chromium and chromium-driver)"
        );
        eprintln!(
            "skipped: the dashboard browser test needs {missing:?} (apt-get install -y chromium chromium-driver)"
        );
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let driver = Killed(
        Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,800", "--lang=en-US"],
        },
    });
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(client) => {
                // The screenshots are of the page, so the viewport (not the window) is 1280×800.
                let chrome = client
                    .execute(
                        "return window.outerHeight - window.innerHeight;",
                        Vec::new(),
                    )
                    .await
                    .unwrap()
                    .as_u64()
                    .unwrap_or(0) as u32;
                client.set_window_size(1280, 800 + chrome).await.unwrap();
                return Some((driver, client));
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no WebDriver session: {e}"),
        }
    }
}

fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    let path = screenshot_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
}

/// Waits until `script` (a JavaScript expression) is truthy in the page, then returns it.
async fn wait_js(c: &Client, what: &str, script: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = c
            .execute(&format!("return ({script});"), Vec::new())
            .await
            .unwrap();
        let truthy = match &v {
            Value::Null | Value::Bool(false) => false,
            Value::String(s) => !s.is_empty(),
            Value::Number(n) => n.as_f64() != Some(0.0),
            _ => true,
        };
        if truthy {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn click(c: &Client, selector: &str) {
    c.find(Locator::Css(selector))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn type_into(c: &Client, selector: &str, text: &str) {
    let e = c.find(Locator::Css(selector)).await.unwrap();
    e.clear().await.unwrap();
    e.send_keys(text).await.unwrap();
}

/// Subscribes `receiver` to one event type of the account.
async fn subscribe(
    app: &common::TestApp,
    a: &common::TestAccount,
    token: &str,
    receiver: &Receiver,
    event: &str,
) {
    let r = app
        .client
        .post(format!(
            "{}/v2/accounts/{}/qss/webhooks",
            app.base, a.account_id
        ))
        .bearer_auth(token)
        .json(&json!({"url": receiver.url(), "secret_token": RECEIVER_SECRET, "events": [event]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

/// A participant sample for the dashboard's meeting.
fn participant(meeting: &str, p: usize, ts: i64, loss: f64) -> Value {
    json!({"kind": "participant_qos", "meeting_id": meeting, "participant_id": format!("p{p}"),
           "user_name": format!("Person {p}"), "timestamp": common::iso(ts),
           "metrics": {"audio": {"bitrate": 64, "latency": 40 + 30 * p, "jitter": 5, "packet_loss": loss},
                       "video": {"bitrate": 1200, "latency": 50, "jitter": 6, "packet_loss": loss,
                                 "frame_rate": 30 - 5 * p}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_signs_in_shows_meetings_charts_settings_errors_and_retries() {
    let Some((_driver, c)) = browser().await else {
        return;
    };
    let app = common::spawn_app_with(vec![("webhook.allow_private_networks", "true")]).await;
    let a = app.create_account("business", true).await;
    let token = app.token(&a).await;
    let r = app
        .patch_settings(
            &a,
            &token,
            json!({"aggregation_interval_seconds": 10, "aggregation_grace_seconds": 0}),
        )
        .await;
    assert_eq!(r.status(), 204);
    let receiver = Receiver::start().await;
    subscribe(&app, &a, &token, &receiver, "qss.meeting_participant_qos").await;
    // And a receiver that fails every delivery: its failures show in the webhooks view.
    let failing = Receiver::start().await;
    failing.set_default(webhook_support::Answer::status(500));
    subscribe(&app, &a, &token, &failing, "qss.phone_call_qos").await;

    // Two windows of a three-person meeting, the third person on a lossy network, and a call.
    let t0 = app.clock.now_ms();
    let mut samples = Vec::new();
    for w in 0..2 {
        for p in 0..3 {
            for s in 0..3 {
                let loss = if p == 2 { 8.0 } else { 0.1 };
                samples.push(participant(
                    "board-meeting",
                    p,
                    t0 + w * 10_000 + s * 3000 + 100,
                    loss,
                ));
            }
        }
    }
    samples.push(
        json!({"kind": "call_qos", "call_id": "call-1", "direction": "inbound",
        "codec": "G.722", "timestamp": common::iso(t0 + 500),
        "metrics": {"bitrate": 64, "latency": 80, "jitter": 8, "packet_loss": 0.5}}),
    );
    assert_eq!(app.post_samples(&a, json!(samples)).await.status(), 202);
    // And a meeting from `qss simulate` (its timestamps are the wall clock's).
    let simulated = Command::new(env!("CARGO_BIN_EXE_qss"))
        .args([
            "simulate",
            "--url",
            &app.base,
            "--account-id",
            &a.account_id,
        ])
        .args([
            "--meetings",
            "1",
            "--participants",
            "3",
            "--calls",
            "0",
            "--duration",
            "6",
        ])
        .args(["--sample-interval", "2", "--seed", "7"])
        .env("QSS_INGEST_KEY", &a.ingest_key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(simulated.success(), "qss simulate failed");
    // Past every window's end (the simulated ones are on the wall clock, ahead of the test's
    // clock), then past the API's 2 s visibility delay of their events.
    let wall = serve_support::now_ms();
    app.advance((wall + 20_000 - app.clock.now_ms()).max(23_000))
        .await;
    app.advance(3_000).await;
    app.wait_for_events(&a, &token, "", |e| e.len() >= 7).await;
    receiver.wait_for_hits(6, Duration::from_secs(10)).await;
    failing.wait_for_hits(1, Duration::from_secs(10)).await;

    // Wrong credentials: an error, and nothing else.
    c.goto(&app.base).await.unwrap();
    type_into(&c, "input[name=account_id]", &a.account_id).await;
    type_into(&c, "input[name=client_id]", &a.client_id).await;
    type_into(&c, "input[name=client_secret]", "not-the-secret").await;
    click(&c, "#signin-form button").await;
    let error = wait_js(
        &c,
        "the sign-in error",
        "document.querySelector('#signin-error').textContent",
    )
    .await;
    assert!(error.as_str().unwrap().contains("Wrong"), "{error}");
    assert_eq!(
        wait_js(
            &c,
            "the live view hidden",
            "document.querySelector('#live-view').hidden"
        )
        .await,
        Value::Bool(true)
    );
    screenshot(&c, "1-signin-error").await;

    // The right ones: the meeting is in the live view.
    type_into(&c, "input[name=client_secret]", &a.client_secret).await;
    click(&c, "#signin-form button").await;
    let row = wait_js(
        &c,
        "the meeting in the live view",
        "[...document.querySelectorAll('#live-table tbody tr')].map(r => r.textContent).join('|')",
    )
    .await;
    assert!(row.as_str().unwrap().contains("board-meeting"), "{row}");
    assert!(row.as_str().unwrap().contains("in progress"), "{row}");
    let simulated = wait_js(
        &c,
        "the simulated meeting in the live view",
        "[...document.querySelectorAll('#live-table tbody tr a')].some(a => a.textContent.startsWith('sim-'))",
    )
    .await;
    assert_eq!(simulated, json!(true));
    let calls = wait_js(
        &c,
        "the call in the live view",
        "[...document.querySelectorAll('#live-calls tbody tr')].map(r => r.textContent).join('|')",
    )
    .await;
    assert!(calls.as_str().unwrap().contains("call-1"), "{calls}");
    screenshot(&c, "2-live").await;

    // The meeting: charts with drawn data, the lossy participant first.
    c.execute(
        "[...document.querySelectorAll('#live-table tbody tr a')].find(a => a.textContent === 'board-meeting').click()",
        Vec::new(),
    )
    .await
    .unwrap();
    let drawn = wait_js(
        &c,
        "a drawn MOS chart",
        "(() => { const cv = document.querySelector('figure.chart[data-metric=mos] canvas');
                   if (!cv) return 0;
                   const d = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
                   let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
                   return n; })()",
    )
    .await;
    assert!(
        drawn.as_f64().unwrap() > 200.0,
        "MOS canvas pixels: {drawn}"
    );
    let charts = wait_js(
        &c,
        "six charts",
        "document.querySelectorAll('figure.chart canvas').length",
    )
    .await;
    assert_eq!(charts, json!(6));
    let first = wait_js(
        &c,
        "the participants",
        "document.querySelector('#meeting-people tbody tr td').textContent",
    )
    .await;
    assert!(
        first.as_str().unwrap().contains("p2"),
        "worst first: {first}"
    );
    let issues = wait_js(
        &c,
        "the windows' issues",
        "[...document.querySelectorAll('#meeting-windows tbody tr')].map(r => r.textContent).join('|')",
    )
    .await;
    assert!(
        issues.as_str().unwrap().contains("high_packet_loss"),
        "{issues}"
    );
    screenshot(&c, "3-meeting").await;

    // Phone calls.
    c.execute("location.hash = '#/phone'", Vec::new())
        .await
        .unwrap();
    wait_js(
        &c,
        "the call",
        "document.querySelector('#phone-table tbody tr')",
    )
    .await;
    screenshot(&c, "4-phone").await;

    // Settings: an interval of 5 is refused, with the message next to the field.
    c.execute("location.hash = '#/settings'", Vec::new())
        .await
        .unwrap();
    wait_js(
        &c,
        "the settings form",
        "document.querySelector('input[name=aggregation_interval_seconds]')",
    )
    .await;
    type_into(&c, "input[name=aggregation_interval_seconds]", "5").await;
    click(&c, "#settings-form button[type=submit]").await;
    let message = wait_js(
        &c,
        "the field's message",
        "document.querySelector('[data-field=aggregation_interval_seconds] .field-error').textContent",
    )
    .await;
    assert!(message.as_str().unwrap().contains("10"), "{message}");
    screenshot(&c, "5-settings-error").await;

    // Webhooks: a delivery is retried from its button.
    c.execute("location.hash = '#/webhooks'", Vec::new())
        .await
        .unwrap();
    let ok_article = format!(
        "[...document.querySelectorAll('article.webhook')].find(a => a.querySelector('h3').textContent.includes('{}'))",
        receiver.url()
    );
    let failing_article = format!(
        "[...document.querySelectorAll('article.webhook')].find(a => a.querySelector('h3').textContent.includes('{}'))",
        failing.url()
    );
    wait_js(
        &c,
        "a retry button",
        &format!("{ok_article}?.querySelector('button.retry')"),
    )
    .await;
    let failure = wait_js(
        &c,
        "the failing subscription's failed attempt",
        &format!("{failing_article}?.querySelector('tbody tr')?.textContent"),
    )
    .await;
    let failure = failure.as_str().unwrap();
    assert!(
        failure.contains("500") && failure.contains("retrying"),
        "{failure}"
    );
    let hits = receiver.hit_count();
    c.execute(
        &format!("{ok_article}.querySelector('button.retry').click()"),
        Vec::new(),
    )
    .await
    .unwrap();
    let label = wait_js(
        &c,
        "the retry queued",
        &format!("{ok_article}.querySelector('button.retry').textContent === 'Queued' && 'Queued'"),
    )
    .await;
    assert_eq!(label, json!("Queued"));
    receiver
        .wait_for_hits(hits + 1, Duration::from_secs(10))
        .await;
    screenshot(&c, "6-webhooks").await;

    // The secret is nowhere in the page.
    let source = c.source().await.unwrap();
    assert!(
        !source.contains(&a.client_secret),
        "the client secret is in the page"
    );
    assert!(!source.contains(&token), "a token is in the page");
    c.close().await.unwrap();
}

/// The page itself is a shell without data, and every call the dashboard makes needs a valid
/// sign-in.
#[tokio::test]
async fn nothing_the_dashboard_reads_or_does_works_without_signing_in() {
    let app = common::spawn_app().await;
    let a = app.create_account("business", true).await;
    let page = app.client.get(&app.base).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains("Sign in"));
    assert!(!html.contains(&a.account_id) && !html.contains(&a.client_secret));
    for asset in [
        "app.js",
        "app.css",
        "uPlot.iife.min.js",
        "uPlot.min.css",
        "uPlot-LICENSE",
    ] {
        let r = app
            .client
            .get(format!("{}/dashboard/{asset}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{asset}");
    }
    let base = format!("/v2/accounts/{}/qss", a.account_id);
    for (method, path) in [
        (reqwest::Method::GET, format!("{base}/events")),
        (reqwest::Method::GET, format!("{base}/settings")),
        (reqwest::Method::PATCH, format!("{base}/settings")),
        (reqwest::Method::GET, format!("{base}/webhooks")),
        (
            reqwest::Method::GET,
            format!("{base}/webhooks/wh/deliveries"),
        ),
        (
            reqwest::Method::POST,
            format!("{base}/webhooks/wh/deliveries/d/retry"),
        ),
        // The operator's sign-in: the account list and an account's token.
        (reqwest::Method::GET, "/admin/accounts".to_string()),
        (
            reqwest::Method::POST,
            format!("/admin/accounts/{}/tokens", a.account_id),
        ),
    ] {
        for auth in [None, Some("Bearer not-a-token")] {
            let mut r = app
                .client
                .request(method.clone(), format!("{}{path}", app.base));
            if let Some(h) = auth {
                r = r.header("authorization", h);
            }
            let r = r.send().await.unwrap();
            assert_eq!(r.status(), 401, "{method} {path} with {auth:?}");
        }
    }
}

/// Signed in through the page against a real `qss serve` (debug logs), with client credentials
/// and then as the operator: no secret and no token of either session appears in the server's
/// log or in the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_of_a_dashboard_session_reaches_the_logs_or_the_page() {
    let Some((_driver, c)) = browser().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let database = serve_support::sqlite_database(dir.path());
    let server = serve_support::ServerProcess::start(
        dir.path(),
        "dashboard",
        &database,
        &[("QSS_LOG", "debug")],
    )
    .await;
    let a = serve_support::create_account(&server.base).await;
    c.goto(&server.base).await.unwrap();
    type_into(&c, "input[name=account_id]", &a.account_id).await;
    type_into(&c, "input[name=client_id]", &a.client_id).await;
    type_into(&c, "input[name=client_secret]", &a.client_secret).await;
    click(&c, "#signin-form button").await;
    wait_js(
        &c,
        "the live view",
        "!document.querySelector('#live-view').hidden",
    )
    .await;
    let token = wait_js(&c, "the session's token", "session.token").await;
    let token = token.as_str().unwrap().to_string();
    for view in ["settings", "webhooks", "phone", "live"] {
        c.execute(&format!("location.hash = '#/{view}'"), Vec::new())
            .await
            .unwrap();
        wait_js(
            &c,
            view,
            &format!("!document.querySelector('#{view}-view').hidden"),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let source = c.source().await.unwrap();
    click(&c, "#signout").await;
    wait_js(
        &c,
        "the sign-in form",
        "!document.querySelector('#signin-view').hidden",
    )
    .await;
    assert_eq!(
        c.execute("return session.token;", Vec::new())
            .await
            .unwrap(),
        Value::Null,
        "the token outlived the sign-out"
    );

    // The operator: a wrong admin token is refused; the right one lists the accounts, and
    // choosing one opens its live view with a token of that account.
    type_into(&c, "input[name=admin_token]", "not-the-admin-token").await;
    click(&c, "#operator-form button").await;
    let error = wait_js(
        &c,
        "the operator's sign-in error",
        "document.querySelector('#operator-error').textContent",
    )
    .await;
    assert_eq!(error, json!("Wrong admin token."));
    type_into(&c, "input[name=admin_token]", serve_support::ADMIN_TOKEN).await;
    click(&c, "#operator-form button").await;
    let row = format!("#accounts-table tr[data-account='{}']", a.account_id);
    wait_js(
        &c,
        "the account in the operator's list",
        &format!("document.querySelector(\"{row}\")"),
    )
    .await;
    screenshot(&c, "0-operator-accounts").await;
    click(&c, &row).await;
    wait_js(
        &c,
        "the account's live view",
        "!document.querySelector('#live-view').hidden && document.querySelector('#who').textContent",
    )
    .await;
    let who = wait_js(&c, "who", "document.querySelector('#who').textContent").await;
    assert_eq!(who, json!(format!("Account {} (operator)", a.account_id)));
    let operator_token = wait_js(&c, "the operator's token", "session.token").await;
    let operator_token = operator_token.as_str().unwrap().to_string();
    c.execute("location.hash = '#/settings'", Vec::new())
        .await
        .unwrap();
    wait_js(
        &c,
        "the settings, read with the operator's token",
        "document.querySelector('input[name=aggregation_interval_seconds]')",
    )
    .await;
    let operator_source = c.source().await.unwrap();
    click(&c, "#switch").await;
    wait_js(
        &c,
        "the choice of account again",
        "!document.querySelector('#accounts-view').hidden && session.token === null",
    )
    .await;
    click(&c, "#signout").await;
    assert_eq!(
        c.execute("return session.adminToken;", Vec::new())
            .await
            .unwrap(),
        Value::Null,
        "the admin token outlived the sign-out"
    );
    c.close().await.unwrap();

    let log = server.log_text();
    assert!(
        log.contains("DEBUG") || log.contains("INFO"),
        "no log: {log}"
    );
    let admin_token = serve_support::ADMIN_TOKEN.to_string();
    for (what, secret) in [
        ("client secret", &a.client_secret),
        ("access token", &token),
        ("admin token", &admin_token),
        ("operator's access token", &operator_token),
    ] {
        assert!(
            !log.contains(secret.as_str()),
            "the {what} is in the server's log"
        );
        for page in [&source, &operator_source] {
            assert!(!page.contains(secret.as_str()), "the {what} is in the page");
        }
    }
}

/// `qss demo` prints a link that opens the dashboard signed in to the demo account, and its
/// simulated meetings appear in the live view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demos_link_opens_the_dashboard_signed_in_with_its_meetings() {
    let Some((_driver, c)) = browser().await else {
        return;
    };
    let mut demo = Killed(
        Command::new(env!("CARGO_BIN_EXE_qss"))
            .args(["demo", "--listen", "127.0.0.1:0", "--duration", "120"])
            .arg("--no-browser")
            .env("QSS_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = demo.0.stdout.take().unwrap();
    let link = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let link = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| {
                l.split_once("Dashboard (signed in to the demo account): ")
                    .map(|(_, url)| url.trim().to_string())
            })
            .expect("the demo printed no dashboard link");
        // Keep reading, so that the demo never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        link
    })
    .await
    .unwrap();
    let account_id = link
        .split("account_id=")
        .nth(1)
        .and_then(|s| s.split('&').next())
        .unwrap()
        .to_string();

    c.goto(&link).await.unwrap();
    let who = wait_js(
        &c,
        "signed in",
        "!document.querySelector('#live-view').hidden && document.querySelector('#who').textContent",
    )
    .await;
    assert_eq!(who, json!(format!("Account {account_id}")));
    let address = c.current_url().await.unwrap();
    assert!(
        !address.as_str().contains("client_secret"),
        "the secret stayed in the address bar: {address}"
    );
    // The demo's first windows close after about 15 s; the page polls every 5 s.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = c
            .execute(
                "return document.querySelectorAll('#live-table tbody tr').length;",
                Vec::new(),
            )
            .await
            .unwrap();
        if rows.as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no meeting in the demo's live view after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    screenshot(&c, "7-demo-live").await;
    c.close().await.unwrap();
}
