//! `qss demo`: a server on a temporary database, a demo account with a 10 s interval, and
//! simulated meetings, a webinar and a phone call posted over real HTTP, so that all three
//! event types appear within a minute. Prints the credentials and ready-to-paste curl lines.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use qss_api::admin::{AccountIn, create_account_in};
use qss_domain::Plan;
use qss_server::Config;
use rand::Rng;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub async fn run(listen: &str, duration: Option<u64>, browser: bool) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("creating a temporary folder")?;
    let db = dir.path().join("qss.db");
    let flags = vec![
        ("listen".to_string(), listen.to_string()),
        ("database".to_string(), format!("sqlite://{}", db.display())),
        // The built-in receiver listens on loopback.
        (
            "webhook.allow_private_networks".to_string(),
            "true".to_string(),
        ),
    ];
    let config = Config::load(None, Vec::new(), &flags)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let shutdown = CancellationToken::new();
    let server = qss_server::start(
        config,
        listener,
        Arc::new(qss_api::SystemClock),
        shutdown.clone(),
    )
    .await?;
    let base = format!("http://{}", server.addr);

    let store = server.state.store.clone();
    let now = now_ms();
    let created = create_account_in(
        &store,
        &AccountIn {
            name: "Demo".into(),
            plan: Plan::Business,
            qss_addon: true,
        },
        now,
    )
    .await?;
    let account_id = created.account.account_id.clone();
    let mut account = store
        .get_account(&account_id)
        .await?
        .context("demo account")?;
    account.settings.aggregation_interval_seconds = 10;
    account.settings.aggregation_grace_seconds = 2;
    account.settings.meeting_end_timeout_seconds = 30;
    store.update_account(&account).await?;
    server.state.accounts.reload(&store).await?;

    let (client_id, client_secret) = (
        &created.credentials.client_id,
        &created.credentials.client_secret,
    );
    let receiver_url = start_receiver().await?;
    subscribe(&base, &account_id, client_id, client_secret, &receiver_url).await?;
    let dashboard = format!(
        "{base}/#signin?account_id={account_id}&client_id={client_id}&client_secret={client_secret}"
    );
    println!();
    println!("qss demo is running at {base}");
    println!();
    println!("  Dashboard (signed in to the demo account): {dashboard}");
    if browser && open_in_browser(&dashboard) {
        println!("  (opened in your browser)");
    }
    println!();
    if let Some(token) = &server.generated_admin_token {
        println!("  admin token:   {token}");
    }
    println!("  account id:    {account_id}");
    println!("  client id:     {client_id}");
    println!("  client secret: {client_secret}");
    println!("  ingest key:    {}", created.ingest_key.ingest_key);
    println!();
    println!(
        "Simulated traffic: two meetings, a webinar and a phone call; 10 s windows, first events in about 15 s."
    );
    println!("Get a token, then list the events (all three types appear within a minute):");
    println!();
    println!(
        "  TOKEN=$(curl -s -X POST -u '{client_id}:{client_secret}' '{base}/oauth/token?grant_type=account_credentials&account_id={account_id}' | sed -E 's/.*\"access_token\":\"([^\"]+)\".*/\\1/')"
    );
    println!(
        "  curl -s -H \"Authorization: Bearer $TOKEN\" '{base}/v2/accounts/{account_id}/qss/events?page_size=300'"
    );
    println!();
    println!(
        "A built-in receiver at {receiver_url} is subscribed to every event type; deliveries appear below."
    );
    println!(
        "Settings: {base}/v2/accounts/{account_id}/qss/settings   Metrics: {base}/metrics   OpenAPI: {base}/openapi.json"
    );
    println!("Press Ctrl-C to stop (the temporary database is removed).");

    let sim = tokio::spawn(simulate(
        base.clone(),
        account_id.clone(),
        created.ingest_key.ingest_key.clone(),
        shutdown.clone(),
    ));
    let stop = shutdown.clone();
    tokio::spawn(async move {
        match duration {
            Some(s) => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(s)) => {}
                    _ = qss_server::shutdown_signal() => {}
                }
            }
            None => qss_server::shutdown_signal().await,
        }
        stop.cancel();
    });
    server.wait().await?;
    sim.abort();
    drop(dir);
    Ok(())
}

/// Opens `url` in the desktop's browser, where there is a desktop; true if a browser was
/// started. The link carries the demo's client secret in its fragment, which never reaches a
/// server and which the page removes from the address bar.
fn open_in_browser(url: &str) -> bool {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else if std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some()
    {
        "xdg-open"
    } else {
        return false;
    };
    std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        // Reaped in the background: the opener exits as soon as it has handed the link on.
        .map(|mut child| std::thread::spawn(move || child.wait()))
        .is_ok()
}

const RECEIVER_SECRET: &str = "demo-receiver-secret-0123456789";

/// The demo's webhook receiver (`qss listen` in-process): verifies signatures and prints one
/// line per delivery.
async fn start_receiver() -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/webhooks", listener.local_addr()?);
    let show: crate::listen::OnEvent = Arc::new(|e: &Value| {
        let o = &e["payload"]["object"];
        let what = match e["event"].as_str().unwrap_or("") {
            "qss.meeting_participant_qos" => format!(
                "{} / {}: mos {} {}",
                o["meeting_id"].as_str().unwrap_or(""),
                o["participant_id"].as_str().unwrap_or(""),
                o["quality"]["mos"],
                o["quality"]["grade"].as_str().unwrap_or("")
            ),
            "qss.meeting_qos_summary" => format!(
                "{}: {} participants, mos_avg {} {}",
                o["meeting_id"].as_str().unwrap_or(""),
                o["participant_count"],
                o["quality"]["mos_avg"],
                o["quality"]["grade"].as_str().unwrap_or("")
            ),
            _ => format!(
                "{} {}: mos {} {}",
                o["call_id"].as_str().unwrap_or(""),
                o["direction"].as_str().unwrap_or(""),
                o["quality"]["mos"],
                o["quality"]["grade"].as_str().unwrap_or("")
            ),
        };
        println!(
            "  webhook  {:<28} {what}",
            e["event"].as_str().unwrap_or("")
        );
    });
    let app = crate::listen::receiver(RECEIVER_SECRET.to_string(), show);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(url)
}

/// Subscribes the receiver to every event type through the API (handshake included).
async fn subscribe(
    base: &str,
    account_id: &str,
    client_id: &str,
    secret: &str,
    url: &str,
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let token: Value = client
        .post(format!(
            "{base}/oauth/token?grant_type=account_credentials&account_id={account_id}"
        ))
        .basic_auth(client_id, Some(secret))
        .send()
        .await?
        .json()
        .await?;
    let token = token["access_token"].as_str().context("no access token")?;
    let r = client
        .post(format!("{base}/v2/accounts/{account_id}/qss/webhooks"))
        .bearer_auth(token)
        .json(&json!({"url": url, "secret_token": RECEIVER_SECRET, "description": "qss demo receiver",
            "events": ["qss.meeting_participant_qos", "qss.meeting_qos_summary", "qss.phone_call_qos"]}))
        .send()
        .await?;
    anyhow::ensure!(
        r.status().as_u16() == 201,
        "subscribing the demo receiver failed: {}",
        r.text().await?
    );
    Ok(())
}

fn now_ms() -> i64 {
    qss_api::Clock::now_ms(&qss_api::SystemClock)
}

/// A participant's network: base latency, jitter and loss, with noise.
#[derive(Clone, Copy)]
struct Network {
    latency: f64,
    jitter: f64,
    loss: f64,
}

fn group(rng: &mut impl Rng, n: Network, bitrate: f64, video: bool) -> Value {
    let mut g = json!({
        "bitrate": (bitrate * rng.gen_range(0.85..1.1)).round(),
        "latency": (n.latency * rng.gen_range(0.8..1.3)).round(),
        "jitter": (n.jitter * rng.gen_range(0.6..1.5) * 10.0).round() / 10.0,
        "packet_loss": (n.loss * rng.gen_range(0.0..2.0) * 100.0).round() / 100.0,
    });
    if video {
        g["resolution"] = json!(if n.loss > 3.0 { "640x360" } else { "1280x720" });
        g["frame_rate"] = json!(if n.loss > 3.0 {
            rng.gen_range(8..14)
        } else {
            rng.gen_range(24..31)
        });
    }
    g
}

/// A participant: id, display name, network.
type Person = (&'static str, &'static str, Network);

async fn simulate(base: String, account_id: String, ingest_key: String, stop: CancellationToken) {
    let client = reqwest::Client::new();
    let url = format!("{base}/v2/accounts/{account_id}/qss/telemetry");
    let good = Network {
        latency: 40.0,
        jitter: 4.0,
        loss: 0.1,
    };
    let wifi = Network {
        latency: 120.0,
        jitter: 25.0,
        loss: 1.0,
    };
    let poor = Network {
        latency: 320.0,
        jitter: 60.0,
        loss: 6.0,
    };
    let meetings: Vec<(&str, &str, Vec<Person>)> = vec![
        (
            "demo-standup",
            "meeting",
            vec![
                ("alice", "Alice", good),
                ("bob", "Bob", wifi),
                ("carol", "Carol", good),
            ],
        ),
        (
            "demo-review",
            "meeting",
            vec![("dave", "Dave", poor), ("erin", "Erin", wifi)],
        ),
        (
            "demo-webinar",
            "webinar",
            vec![
                ("host", "Host", good),
                ("guest-1", "Guest 1", wifi),
                ("guest-2", "Guest 2", poor),
                ("guest-3", "Guest 3", good),
            ],
        ),
    ];
    let mut tick: u64 = 0;
    loop {
        if stop.is_cancelled() {
            return;
        }
        let now = now_ms();
        let mut samples = Vec::new();
        {
            let mut rng = rand::thread_rng();
            for (mid, mtype, people) in &meetings {
                for (pid, name, net) in people {
                    samples.push(json!({
                        "kind": "participant_qos", "meeting_id": mid, "meeting_type": mtype,
                        "participant_id": pid, "user_id": format!("u-{pid}"), "user_name": name,
                        "timestamp": qss_domain::timefmt::format_ms_precise(now),
                        "metrics": {
                            "audio": group(&mut rng, *net, 64.0, false),
                            "video": group(&mut rng, *net, 1500.0, true),
                            "cpu_usage": (rng.gen_range(10.0..60.0f64) * 10.0).round() / 10.0,
                        }
                    }));
                }
            }
            for direction in ["inbound", "outbound"] {
                samples.push(json!({
                    "kind": "call_qos", "call_id": "demo-call-1", "direction": direction,
                    "caller_number": "+15550100", "callee_number": "+15550199", "codec": "opus",
                    "timestamp": qss_domain::timefmt::format_ms_precise(now),
                    "metrics": {"bitrate": 32, "latency": rng.gen_range(60..140), "jitter": rng.gen_range(2..20), "packet_loss": (rng.gen_range(0.0..1.5f64) * 100.0).round() / 100.0}
                }));
            }
            // The stand-up ends every 30 s and starts again: a summary each time.
            if tick % 15 == 14 {
                samples.push(json!({"kind": "meeting_ended", "meeting_id": "demo-standup", "timestamp": qss_domain::timefmt::format_ms_precise(now + 1)}));
            }
        }
        let result = client
            .post(&url)
            .bearer_auth(&ingest_key)
            .json(&json!({"samples": samples}))
            .send()
            .await;
        match result {
            Ok(r) if r.status().as_u16() == 202 => {}
            Ok(r) => tracing::warn!(status = r.status().as_u16(), "demo ingest refused"),
            Err(e) => tracing::warn!(error = %e, "demo ingest failed"),
        }
        tick += 1;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.cancelled() => return,
        }
    }
}
