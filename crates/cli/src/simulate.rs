//! `qss simulate` (SPEC 9): drives a server with realistic traffic from `qss-sim`, in real time,
//! posting JSON batches to the ingest endpoint with a few requests in flight, and reports what
//! was sent and how the server answered.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use qss_domain::Sample;
use qss_sim::{NetworkMix, SimConfig, Simulation};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Requests in flight at once: enough to hide latency, few enough to stay polite.
const IN_FLIGHT: usize = 4;
/// A request answered 429 or 503 is sent again after its `Retry-After` this many times at
/// most; only then are its samples counted as throttled (or failed).
const MAX_RETRIES: u32 = 3;
/// The longest `Retry-After` honoured; the default when the header is missing is 1 s.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Network {
    Good,
    Mixed,
    Poor,
}

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The account to send telemetry for.
    #[arg(long)]
    account_id: String,
    /// An ingest key of that account (scope qss:ingest).
    #[arg(long, env = "QSS_INGEST_KEY", hide_env_values = true)]
    ingest_key: String,
    /// Meetings running at once.
    #[arg(long, default_value_t = 3)]
    meetings: usize,
    /// Mean participants per meeting (webinars are larger).
    #[arg(long, default_value_t = 5)]
    participants: usize,
    /// Phone calls running at once.
    #[arg(long, default_value_t = 2)]
    calls: usize,
    /// Seconds between two samples of one participant or call direction.
    #[arg(long, default_value_t = 5)]
    sample_interval: u64,
    /// Seconds to run.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// The networks participants are on.
    #[arg(long, value_enum, default_value_t = Network::Mixed)]
    network: Network,
    /// Seed of the simulation: the same seed gives the same traffic.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Largest number of samples per request.
    #[arg(long, default_value_t = 500)]
    batch_size: usize,
}

pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.sample_interval > 0,
        "--sample-interval must be at least 1"
    );
    anyhow::ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    let endpoint = format!(
        "{}/v2/accounts/{}/qss/telemetry",
        args.url.trim_end_matches('/'),
        args.account_id
    );
    let sender = Sender {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?,
        endpoint: Arc::new(endpoint),
        key: Arc::new(args.ingest_key.clone()),
        permits: Arc::new(Semaphore::new(IN_FLIGHT)),
        tasks: JoinSet::new(),
        batch_size: args.batch_size,
    };
    let interval_ms = (args.sample_interval * 1000) as i64;
    let config = SimConfig {
        meetings: args.meetings,
        participants: args.participants,
        calls: args.calls,
        sample_interval_ms: interval_ms,
        network: match args.network {
            Network::Good => NetworkMix::Good,
            Network::Mixed => NetworkMix::Mixed,
            Network::Poor => NetworkMix::Poor,
        },
        ..SimConfig::default()
    };
    let start = now_ms();
    let end = start + (args.duration * 1000) as i64;
    let mut sim = Simulation::new(config, args.seed, start);

    let bar = ProgressBar::new(args.duration);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len}s {msg}")
            .context("progress bar template")?,
    );
    let mut report = Report::default();
    let mut sender = sender;
    // Samples are produced at their own times; ticking at most once a second sends them promptly.
    let mut ticker = tokio::time::interval(Duration::from_millis(interval_ms.min(1000) as u64));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = &mut ctrl_c => {
                bar.println("interrupted: ending meetings and calls");
                break;
            }
        }
        let now = now_ms();
        if now >= end {
            break;
        }
        sender.send(sim.step(now), &mut report).await;
        sender.collect_finished(&mut report);
        bar.set_position(((now - start) / 1000) as u64);
        bar.set_message(report.progress_line());
    }
    let stop = now_ms().min(end);
    sender.send(sim.finish(stop), &mut report).await;
    while let Some(done) = sender.tasks.join_next().await {
        report.record(done.context("a request task failed")?);
    }
    bar.set_position(((stop - start) / 1000) as u64);
    bar.finish_with_message(report.progress_line());
    println!("{}", report.render());
    Ok(())
}

/// Posts batches with at most [`IN_FLIGHT`] requests outstanding; it owns the tasks in flight.
struct Sender {
    client: reqwest::Client,
    endpoint: Arc<String>,
    key: Arc<String>,
    permits: Arc<Semaphore>,
    tasks: JoinSet<Outcome>,
    batch_size: usize,
}

impl Sender {
    async fn send(&mut self, samples: Vec<Sample>, report: &mut Report) {
        for batch in samples.chunks(self.batch_size) {
            for sample in batch {
                *report.sent_by_kind.entry(sample.kind()).or_default() += 1;
            }
            // Waiting for a permit here slows the simulation down instead of piling up requests.
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                return;
            };
            let body = qss_sim::batch_body(batch);
            let samples = batch.len();
            let client = self.client.clone();
            let endpoint = self.endpoint.clone();
            let key = self.key.clone();
            self.tasks.spawn(async move {
                let started = Instant::now();
                let mut retries = 0;
                let answer = loop {
                    let (answer, retry_after) = post(&client, &endpoint, &key, body.clone()).await;
                    match answer {
                        Answer::Status(429 | 503, _) if retries < MAX_RETRIES => {
                            retries += 1;
                            tokio::time::sleep(retry_after).await;
                        }
                        answer => break answer,
                    }
                };
                drop(permit);
                Outcome {
                    samples,
                    latency: started.elapsed(),
                    answer,
                    retries,
                }
            });
            self.collect_finished(report);
        }
    }

    fn collect_finished(&mut self, report: &mut Report) {
        while let Some(done) = self.tasks.try_join_next() {
            match done {
                Ok(outcome) => report.record(outcome),
                Err(e) => report.note_error(format!("request task failed: {e}")),
            }
        }
    }
}

/// One POST: how the server answered, and how long it asked to wait before trying again.
pub(crate) async fn post(
    client: &reqwest::Client,
    endpoint: &str,
    key: &str,
    body: Vec<u8>,
) -> (Answer, Duration) {
    let response = client
        .post(endpoint)
        .bearer_auth(key)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await;
    let response = match response {
        Ok(r) => r,
        Err(e) => return (Answer::Failed(format!("{e}")), Duration::ZERO),
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(1), Duration::from_secs)
        .min(MAX_RETRY_AFTER);
    let text = response.text().await.unwrap_or_default();
    if status == 202 {
        let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let count = |k: &str| {
            value
                .get(k)
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0)
        };
        let accepted = Answer::Accepted {
            accepted: count("accepted"),
            duplicates: count("duplicates"),
        };
        return (accepted, retry_after);
    }
    (
        Answer::Status(status, text.chars().take(300).collect()),
        retry_after,
    )
}

struct Outcome {
    samples: usize,
    /// From the first try to the final answer, waits for `Retry-After` included.
    latency: Duration,
    answer: Answer,
    /// Tries after a 429 or 503.
    retries: u32,
}

pub(crate) enum Answer {
    Accepted {
        accepted: u64,
        duplicates: u64,
    },
    /// Any other status, with the start of the body.
    Status(u16, String),
    /// No answer at all (connection refused, timeout).
    Failed(String),
}

#[derive(Default)]
struct Report {
    sent_by_kind: BTreeMap<&'static str, u64>,
    requests: u64,
    accepted: u64,
    duplicates: u64,
    rejected_requests: u64,
    rejected_samples: u64,
    throttled_requests: u64,
    throttled_samples: u64,
    /// Requests sent again after a 429 or 503, and how many times in all.
    retried_requests: u64,
    retries: u64,
    failed_requests: u64,
    failed_samples: u64,
    latencies: Vec<Duration>,
    /// The first few distinct problems, to show what went wrong without flooding the terminal.
    problems: Vec<String>,
}

impl Report {
    fn record(&mut self, outcome: Outcome) {
        self.requests += 1;
        self.latencies.push(outcome.latency);
        if outcome.retries > 0 {
            self.retried_requests += 1;
            self.retries += u64::from(outcome.retries);
        }
        let samples = outcome.samples as u64;
        match outcome.answer {
            Answer::Accepted {
                accepted,
                duplicates,
            } => {
                self.accepted += accepted;
                self.duplicates += duplicates;
            }
            Answer::Status(429, _) => {
                self.throttled_requests += 1;
                self.throttled_samples += samples;
            }
            Answer::Status(status, body) if (400..500).contains(&status) => {
                self.rejected_requests += 1;
                self.rejected_samples += samples;
                self.note_error(format!("{status}: {body}"));
            }
            Answer::Status(status, body) => {
                self.failed_requests += 1;
                self.failed_samples += samples;
                self.note_error(format!("{status}: {body}"));
            }
            Answer::Failed(e) => {
                self.failed_requests += 1;
                self.failed_samples += samples;
                self.note_error(e);
            }
        }
    }

    fn note_error(&mut self, problem: String) {
        if self.problems.len() < 5 && !self.problems.contains(&problem) {
            self.problems.push(problem);
        }
    }

    fn sent(&self) -> u64 {
        self.sent_by_kind.values().sum()
    }

    fn progress_line(&self) -> String {
        format!(
            "sent {} accepted {} rejected {} throttled {} errors {}",
            self.sent(),
            self.accepted,
            self.rejected_samples,
            self.throttled_samples,
            self.failed_samples
        )
    }

    fn render(&self) -> String {
        let mut lines = vec![format!(
            "sent {} samples in {} requests",
            self.sent(),
            self.requests
        )];
        for (kind, n) in &self.sent_by_kind {
            lines.push(format!("  {kind:<16} {n}"));
        }
        lines.push(format!(
            "accepted {} (duplicates {})",
            self.accepted, self.duplicates
        ));
        lines.push(format!(
            "rejected {} samples in {} requests (4xx)",
            self.rejected_samples, self.rejected_requests
        ));
        lines.push(format!(
            "throttled {} samples in {} requests (429 after {MAX_RETRIES} retries)",
            self.throttled_samples, self.throttled_requests
        ));
        lines.push(format!(
            "retried {} requests after 429 or 503 ({} retries, each after its Retry-After)",
            self.retried_requests, self.retries
        ));
        lines.push(format!(
            "errors {} samples in {} requests (5xx or no answer)",
            self.failed_samples, self.failed_requests
        ));
        let mut sorted = self.latencies.clone();
        sorted.sort();
        if let (Some(p50), Some(p99)) = (percentile(&sorted, 0.50), percentile(&sorted, 0.99)) {
            lines.push(format!(
                "request latency p50 {:.1} ms, p99 {:.1} ms (retries included)",
                p50.as_secs_f64() * 1000.0,
                p99.as_secs_f64() * 1000.0
            ));
        }
        for problem in &self.problems {
            lines.push(format!("  e.g. {problem}"));
        }
        lines.join("\n")
    }
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], q: f64) -> Option<Duration> {
    let last = sorted.len().checked_sub(1)?;
    sorted.get((last as f64 * q).round() as usize).copied()
}

fn now_ms() -> i64 {
    qss_api::Clock::now_ms(&qss_api::SystemClock)
}
