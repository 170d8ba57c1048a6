//! `qss soak` (issue 7, not in CI): a long run of simulated traffic against a real `qss serve`
//! process, restarted (SIGTERM, then started again on the same database) half way through.
//! It reports the server's resident memory over time, the samples acknowledged against the
//! samples the events count, and the events the API lists against the deliveries a signed
//! webhook receiver got.
//!
//! The clients keep every sample until a 202 covers it and send it again otherwise (a restart
//! refuses connections for a moment), so every sample is acknowledged once the run is over.
//! Windows are 10 s with 30 s of grace: more events than the defaults give, and room for the
//! restart, so that no sample arrives after its window was emitted.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use qss_domain::Sample;
use qss_sim::{NetworkMix, SimConfig, Simulation};
use serde_json::{Value, json};

use crate::simulate::Answer;

const RECEIVER_SECRET: &str = "soak-receiver-secret-0123456789";
const INTERVAL_S: i64 = 10;
const GRACE_S: i64 = 30;
const END_TIMEOUT_S: i64 = 60;
/// Memory is read this often.
const MEMORY_EVERY: Duration = Duration::from_secs(5);
/// Readings in each half's first minutes (start-up, caches filling) are left out of the
/// flatness figure.
const WARM_UP: Duration = Duration::from_secs(180);

#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// Minutes of traffic; the server is restarted half way.
    #[arg(long, default_value_t = 30)]
    minutes: u64,
    /// Meetings running at once.
    #[arg(long, default_value_t = 20)]
    meetings: usize,
    /// Mean participants per meeting.
    #[arg(long, default_value_t = 8)]
    participants: usize,
    /// Phone calls running at once.
    #[arg(long, default_value_t = 10)]
    calls: usize,
    /// The database: a `postgres://` URL, or by default a SQLite file in a temporary folder.
    #[arg(long)]
    database: Option<String>,
    /// Also write the report (Markdown) to this file, and beside it every memory reading
    /// (`<name>.memory.csv`) and the server's log (`<name>.serve.log`).
    #[arg(long)]
    report: Option<std::path::PathBuf>,
}

/// The `qss serve` under test.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(database: &str, port: u16, admin: &str, log: &Path) -> anyhow::Result<Server> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .context("opening the server's log")?;
        let child = Command::new(std::env::current_exe()?)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--database", database])
            .env("QSS_ADMIN_TOKEN", admin)
            .env("QSS_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true")
            .env("QSS_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting qss serve")?;
        Ok(Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
        })
    }

    async fn wait_ready(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("qss serve exited with {status}");
            }
            let ready = http.get(format!("{}/readyz", self.base)).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("qss serve was not ready within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, and the graceful shutdown of SPEC 8.
    fn stop(&mut self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .context("sending SIGTERM")?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("qss serve stopped with {status}");
        }
        Ok(started.elapsed())
    }

    /// The allocator `qss serve` runs on (the same binary as this one), and whether the kernel
    /// may give it transparent huge pages (`THP_enabled` in `/proc/<pid>/status`).
    fn memory_setup(&self) -> String {
        let allocator = if cfg!(feature = "jemalloc") {
            "jemalloc"
        } else {
            "the system allocator"
        };
        let status = self.status();
        let thp = match status
            .as_deref()
            .and_then(|s| status_field(s, "THP_enabled:"))
        {
            Some("0") => "off",
            Some(_) => "on",
            None => "unknown",
        };
        format!("{allocator}, transparent huge pages {thp}")
    }

    /// The kernel's `/proc/<pid>/status` of the server.
    fn status(&self) -> Option<String> {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()
    }

    /// Resident memory and its anonymous part (the heap, as opposed to mapped files), MiB.
    fn memory_mib(&self) -> Option<(f64, f64)> {
        let status = self.status()?;
        let mib = |name: &str| -> Option<f64> {
            let kb: f64 = status_field(&status, name)?
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            Some(kb / 1024.0)
        };
        Some((mib("VmRSS:")?, mib("RssAnon:")?))
    }
}

/// The value of one field of a `/proc/<pid>/status`, trimmed.
fn status_field<'s>(status: &'s str, name: &str) -> Option<&'s str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One reading of the server's memory.
struct Reading {
    secs: u64,
    half: usize,
    rss: f64,
    anon: f64,
}

/// What the signed receiver got: deliveries per event, by event identity.
#[derive(Default)]
struct Received {
    by_event: HashMap<String, u32>,
}

/// An event's identity, the same for the API's copy and a delivered one.
fn event_key(e: &Value) -> String {
    let o = &e["payload"]["object"];
    format!(
        "{}|{}|{}|{}|{}|{}",
        e["event"].as_str().unwrap_or(""),
        o["meeting_instance_id"].as_str().unwrap_or(""),
        o["participant_id"].as_str().unwrap_or(""),
        o["call_id"].as_str().unwrap_or(""),
        o["direction"].as_str().unwrap_or(""),
        o["timestamp"].as_str().unwrap_or("")
    )
}

/// The clients' samples: each is kept until a 202 covers it.
#[derive(Default)]
struct Traffic {
    pending: Vec<Sample>,
    /// Acknowledged samples by kind.
    acknowledged: BTreeMap<&'static str, u64>,
    requests: u64,
    refused: u64,
    /// Non-202 answers by status (0: no answer).
    answers: BTreeMap<u16, u64>,
}

impl Traffic {
    async fn flush(&mut self, http: &reqwest::Client, endpoint: &str, key: &str) {
        while !self.pending.is_empty() {
            let n = self.pending.len().min(500);
            let body = qss_sim::batch_body(&self.pending[..n]);
            self.requests += 1;
            let (answer, _) = crate::simulate::post(http, endpoint, key, body).await;
            match answer {
                Answer::Accepted { .. } => {
                    for s in self.pending.drain(..n) {
                        *self.acknowledged.entry(s.kind()).or_default() += 1;
                    }
                }
                Answer::Status(status, _) => {
                    self.refused += 1;
                    *self.answers.entry(status).or_default() += 1;
                    return; // again at the next tick
                }
                Answer::Failed(_) => {
                    self.refused += 1;
                    *self.answers.entry(0).or_default() += 1;
                    return;
                }
            }
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn now_ms() -> i64 {
    qss_api::Clock::now_ms(&qss_api::SystemClock)
}

pub async fn run(args: SoakArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.minutes >= 2, "--minutes must be at least 2");
    let dir = tempfile::tempdir().context("creating a temporary folder")?;
    let database = match &args.database {
        Some(url) => url.clone(),
        None => format!("sqlite://{}", dir.path().join("qss.db").display()),
    };
    let log = dir.path().join("serve.log");
    let admin = format!("soak-admin-{}", qss_domain::ids::random_secret());
    let port = free_port()?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;

    // The receiver: qss listen's, verifying both signatures of every delivery.
    let received = Arc::new(Mutex::new(Received::default()));
    let sink = received.clone();
    let on_event: crate::listen::OnEvent = Arc::new(move |e: &Value| {
        *sink
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_event
            .entry(event_key(e))
            .or_default() += 1;
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hook", listener.local_addr()?);
    let router = crate::listen::receiver(RECEIVER_SECRET.to_string(), on_event);
    tokio::spawn(async move { axum::serve(listener, router).await });

    let mut server = Server::start(&database, port, &admin, &log)?;
    server.wait_ready(&http).await?;
    let base = server.base.clone();
    let memory_setup = server.memory_setup();

    // The account, its settings and its subscription.
    let created: Value = http
        .post(format!("{base}/admin/accounts"))
        .bearer_auth(&admin)
        .json(&json!({"name": "Soak", "plan": "business", "qss_addon": true}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let account_id = created["account_id"]
        .as_str()
        .context("account_id")?
        .to_string();
    let ingest_key = created["ingest_key"]["ingest_key"]
        .as_str()
        .context("ingest key")?
        .to_string();
    let token: Value = http
        .post(format!(
            "{base}/oauth/token?grant_type=account_credentials&account_id={account_id}"
        ))
        .basic_auth(
            created["credentials"]["client_id"].as_str().unwrap_or(""),
            created["credentials"]["client_secret"].as_str(),
        )
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let token = token["access_token"].as_str().context("token")?.to_string();
    let v2 = format!("{base}/v2/accounts/{account_id}/qss");
    http.patch(format!("{v2}/settings"))
        .bearer_auth(&token)
        .json(&json!({"aggregation_interval_seconds": INTERVAL_S,
                      "aggregation_grace_seconds": GRACE_S,
                      "meeting_end_timeout_seconds": END_TIMEOUT_S}))
        .send()
        .await?
        .error_for_status()?;
    http.post(format!("{v2}/webhooks"))
        .bearer_auth(&token)
        .json(&json!({"url": hook, "secret_token": RECEIVER_SECRET,
                      "events": ["qss.meeting_participant_qos", "qss.meeting_qos_summary",
                                 "qss.phone_call_qos"]}))
        .send()
        .await?
        .error_for_status()
        .context("subscribing the receiver")?;

    // Traffic, with the restart half way and memory read as it goes.
    let total = Duration::from_secs(args.minutes * 60);
    let started = Instant::now();
    let start_ms = now_ms();
    let mut sim = Simulation::new(
        SimConfig {
            meetings: args.meetings,
            participants: args.participants,
            calls: args.calls,
            sample_interval_ms: 5_000,
            network: NetworkMix::Mixed,
            mean_meeting_ms: 8 * 60_000,
            mean_call_ms: 3 * 60_000,
        },
        7,
        start_ms,
    );
    let endpoint = format!("{v2}/telemetry");
    let mut traffic = Traffic::default();
    let mut memory: Vec<Reading> = Vec::new();
    let mut restart: Option<(Duration, Duration)> = None;
    let mut half = 0;
    let mut next_memory = started;
    let mut next_line = started;
    let bar = ProgressBar::new(total.as_secs());
    bar.set_style(ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len}s {msg}",
    )?);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    while started.elapsed() < total {
        ticker.tick().await;
        if half == 0 && started.elapsed() >= total / 2 {
            let note = "restarting the server (SIGTERM, then a new process on the same database)";
            if bar.is_hidden() {
                eprintln!("{note}");
            }
            bar.println(note);
            let down = Instant::now();
            let stopping = server.stop()?;
            drop(server);
            server = Server::start(&database, port, &admin, &log)?;
            server.wait_ready(&http).await?;
            restart = Some((stopping, down.elapsed()));
            half = 1;
        }
        traffic.pending.extend(sim.step(now_ms()));
        traffic.flush(&http, &endpoint, &ingest_key).await;
        if Instant::now() >= next_memory {
            if let Some((rss, anon)) = server.memory_mib() {
                memory.push(Reading {
                    secs: started.elapsed().as_secs(),
                    half,
                    rss,
                    anon,
                });
            }
            next_memory += MEMORY_EVERY;
        }
        let status = format!(
            "{} samples acknowledged, {} pending, {:.0} MiB",
            traffic.acknowledged.values().sum::<u64>(),
            traffic.pending.len(),
            memory.last().map_or(0.0, |m| m.rss)
        );
        // Without a terminal (a log file, a CI job) a line a minute instead of the bar.
        if bar.is_hidden() && Instant::now() >= next_line {
            eprintln!("[{} min] {status}", started.elapsed().as_secs() / 60);
            next_line += Duration::from_secs(60);
        }
        bar.set_position(started.elapsed().as_secs());
        bar.set_message(status);
    }
    bar.finish();

    // The end: every meeting and call ended, every sample acknowledged, every event emitted.
    traffic.pending.extend(sim.finish(now_ms()));
    let deadline = Instant::now() + Duration::from_secs(120);
    while !traffic.pending.is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "samples still unacknowledged after 2 minutes"
        );
        traffic.flush(&http, &endpoint, &ingest_key).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "waiting for the last windows and summaries ({} s of grace)...",
        GRACE_S
    );
    let events = settle_events(&http, &v2, &token, start_ms).await?;
    let received = settle_deliveries(&received, &events).await;

    let report = render(
        &args,
        &traffic,
        &events,
        &received,
        &memory,
        &memory_setup,
        restart,
    );
    println!("{report}");
    if let Some(path) = &args.report {
        std::fs::write(path, &report).with_context(|| format!("writing {}", path.display()))?;
        // Every reading, for a closer look.
        let csv: String = std::iter::once("seconds,half,resident_mib,anonymous_mib\n".to_string())
            .chain(
                memory
                    .iter()
                    .map(|m| format!("{},{},{:.1},{:.1}\n", m.secs, m.half, m.rss, m.anon)),
            )
            .collect();
        std::fs::write(path.with_extension("memory.csv"), csv)?;
        let _ = std::fs::copy(&log, path.with_extension("serve.log"));
    }
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    if log_text.contains("panicked") {
        bail!("the server's log has a panic: {}", log.display());
    }
    Ok(())
}

/// Every event of the run, once the count has stopped growing for a while.
async fn settle_events(
    http: &reqwest::Client,
    v2: &str,
    token: &str,
    start_ms: i64,
) -> anyhow::Result<Vec<Value>> {
    let from = qss_domain::timefmt::format_ms(start_ms - 60_000);
    let mut last = (0, Instant::now());
    loop {
        let mut events = Vec::new();
        let mut next = String::new();
        loop {
            let mut url = format!("{v2}/events?page_size=300&from={from}");
            if !next.is_empty() {
                url.push_str(&format!("&next_page_token={next}"));
            }
            let r = http.get(&url).bearer_auth(token).send().await?;
            if r.status() == 429 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            let page: Value = r.error_for_status()?.json().await?;
            events.extend(page["events"].as_array().cloned().unwrap_or_default());
            next = page["next_page_token"].as_str().unwrap_or("").to_string();
            if next.is_empty() {
                break;
            }
        }
        if events.len() != last.0 {
            last = (events.len(), Instant::now());
        } else if last.1.elapsed() > Duration::from_secs((GRACE_S + 2 * INTERVAL_S) as u64) {
            return Ok(events);
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// The receiver's tally, once every listed event arrived or a minute passed.
async fn settle_deliveries(received: &Mutex<Received>, events: &[Value]) -> HashMap<String, u32> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_event
            .clone();
        if events.iter().all(|e| got.contains_key(&event_key(e))) || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn render(
    args: &SoakArgs,
    traffic: &Traffic,
    events: &[Value],
    received: &HashMap<String, u32>,
    memory: &[Reading],
    memory_setup: &str,
    restart: Option<(Duration, Duration)>,
) -> String {
    let count = |kind: &str| -> u64 {
        events
            .iter()
            .filter(|e| e["event"] == kind)
            .map(|e| e["payload"]["object"]["sample_count"].as_u64().unwrap_or(0))
            .sum()
    };
    let of_type = |kind: &str| events.iter().filter(|e| e["event"] == kind).count();
    let ack = |kind: &str| traffic.acknowledged.get(kind).copied().unwrap_or(0);
    let participant_ack = ack("participant_qos");
    let call_ack = ack("call_qos");
    let in_windows = count("qss.meeting_participant_qos");
    let in_summaries = count("qss.meeting_qos_summary");
    let in_calls = count("qss.phone_call_qos");
    let expected: std::collections::HashSet<String> = events.iter().map(event_key).collect();
    let missing = expected
        .iter()
        .filter(|k| !received.contains_key(*k))
        .count();
    let unexpected = received.keys().filter(|k| !expected.contains(*k)).count();
    let redelivered: u32 = received.values().map(|n| n - 1).sum();

    let mut out = String::new();
    let line = |out: &mut String, s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(
        &mut out,
        format!(
            "## Soak: {} minutes, {} meetings of about {} participants and {} calls at once",
            args.minutes, args.meetings, args.participants, args.calls
        ),
    );
    line(&mut out, String::new());
    if let Some((stopping, down)) = restart {
        line(
            &mut out,
            format!(
                "- Restart half way: SIGTERM to exit {:.1} s, exit to ready again {:.1} s.",
                stopping.as_secs_f64(),
                (down - stopping).as_secs_f64()
            ),
        );
    }
    line(
        &mut out,
        format!(
            "- Requests: {}; answered otherwise than 202 and sent again: {} ({:?} by status, 0 = no answer).",
            traffic.requests, traffic.refused, traffic.answers
        ),
    );
    line(&mut out, String::new());
    line(&mut out, "| | acknowledged | counted | |".into());
    line(&mut out, "|---|---|---|---|".into());
    let verdict = |a: u64, b: u64| if a == b { "equal" } else { "**differ**" };
    line(
        &mut out,
        format!(
            "| participant samples, in participant windows | {participant_ack} | {in_windows} | {} |",
            verdict(participant_ack, in_windows)
        ),
    );
    line(
        &mut out,
        format!(
            "| participant samples, in meeting summaries | {participant_ack} | {in_summaries} | {} |",
            verdict(participant_ack, in_summaries)
        ),
    );
    line(
        &mut out,
        format!(
            "| call samples, in phone events | {call_ack} | {in_calls} | {} |",
            verdict(call_ack, in_calls)
        ),
    );
    line(&mut out, String::new());
    line(
        &mut out,
        format!(
            "- Events: {} participant windows, {} summaries, {} phone windows ({} in all).",
            of_type("qss.meeting_participant_qos"),
            of_type("qss.meeting_qos_summary"),
            of_type("qss.phone_call_qos"),
            events.len()
        ),
    );
    line(
        &mut out,
        format!(
            "- Deliveries: {} events expected, {} received (signatures verified), {missing} missing, {unexpected} not in the API, {redelivered} delivered again (at least once).",
            expected.len(),
            expected.len() - missing
        ),
    );
    line(&mut out, String::new());
    line(
        &mut out,
        format!(
            "Resident memory of `qss serve` ({memory_setup}; MiB; anonymous: the heap, without \
             mapped files):"
        ),
    );
    line(&mut out, String::new());
    line(&mut out, "| minute | resident | anonymous |".into());
    line(&mut out, "|---|---|---|".into());
    for m in memory
        .iter()
        .filter(|m| m.secs % 60 < MEMORY_EVERY.as_secs())
    {
        line(
            &mut out,
            format!("| {} | {:.0} | {:.0} |", m.secs / 60, m.rss, m.anon),
        );
    }
    line(&mut out, String::new());
    let half_secs = args.minutes * 30;
    for h in 0..2 {
        let warm: Vec<&Reading> = memory
            .iter()
            .filter(|m| {
                m.half == h && m.secs.saturating_sub(h as u64 * half_secs) >= WARM_UP.as_secs()
            })
            .collect();
        let spread = |get: fn(&Reading) -> f64| {
            let (lo, hi) = warm
                .iter()
                .map(|m| get(m))
                .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
            (lo, hi, (hi - lo) / lo * 100.0)
        };
        if warm.is_empty() {
            continue;
        }
        let (lo, hi, pct) = spread(|m| m.rss);
        let (alo, ahi, apct) = spread(|m| m.anon);
        let peak = warm
            .iter()
            .max_by(|a, b| a.rss.total_cmp(&b.rss))
            .map_or(0, |m| m.secs);
        line(
            &mut out,
            format!(
                "- {} half, after {} minutes of warm-up: resident {lo:.0} to {hi:.0} MiB, a spread of {pct:.1} % ({}; highest at {}:{:02}); anonymous {alo:.0} to {ahi:.0} MiB ({apct:.1} %).",
                if h == 0 { "First" } else { "Second" },
                WARM_UP.as_secs() / 60,
                if pct <= 10.0 {
                    "flat within 10 %"
                } else {
                    "**not flat within 10 %**"
                },
                peak / 60,
                peak % 60
            ),
        );
    }
    out
}
