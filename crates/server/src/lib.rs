//! The composition root: the one place where configuration, storage, the aggregation thread,
//! background tasks and the HTTP API are wired together. [`start`] takes a bound listener,
//! a clock and a shutdown token, so tests run a whole server on port 0 with a manual clock.

pub mod cluster;
pub mod config;
pub mod dispatch;
pub mod pipeline;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use qss_api::{Accounts, ApiConfig, AppState, Clock, Metrics};
use qss_store::{PgStore, SqliteStore, Store, hash_secret};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{Backend, Config};

/// Ingest requests queued for the aggregation thread; beyond this, handlers wait (and with
/// them, their clients): the queue never grows without bound.
const INGEST_QUEUE: usize = 1024;
const ADMIN_TOKEN_KEY: &str = "admin_token_sha256";
const PAGE_KEY: &str = "page_token_key";

/// A running server.
pub struct Server {
    pub addr: std::net::SocketAddr,
    /// The operator token when this start generated it (shown once), else `None`.
    pub generated_admin_token: Option<String>,
    pub state: AppState,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// Waits until the server has stopped (after its shutdown token fired).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("server task")?
    }
}

fn hex32(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
    }
    Some(out)
}

/// Opens the database, recovers the aggregation state and starts serving on `listener`
/// until `shutdown` fires.
pub async fn start(
    config: Config,
    listener: TcpListener,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> anyhow::Result<Server> {
    let store = match config.backend()? {
        Backend::Sqlite(path) => Store::Sqlite(Arc::new(
            tokio::task::spawn_blocking(move || SqliteStore::open_exclusive(&path))
                .await?
                .context("opening the database")?,
        )),
        Backend::Postgres(url) => Store::Postgres(
            PgStore::connect(&url, config.postgres.pool_size)
                .await
                .context("connecting to PostgreSQL and applying migrations")?,
        ),
    };

    // The operator token: configured, or generated on first start and stored hashed.
    let mut generated_admin_token = None;
    let admin_hash = match &config.admin_token {
        Some(t) => hash_secret(t),
        None => {
            let candidate = qss_domain::ids::random_secret();
            let stored = store
                .init_meta(ADMIN_TOKEN_KEY, &hex32(&hash_secret(&candidate)))
                .await?;
            if stored == hex32(&hash_secret(&candidate)) {
                generated_admin_token = Some(candidate);
            }
            unhex32(&stored).context("stored admin token hash is corrupt")?
        }
    };
    let page_key = store
        .init_meta(
            PAGE_KEY,
            &hex32(&hash_secret(&qss_domain::ids::random_secret())),
        )
        .await?;
    let page_key = unhex32(&page_key).context("stored page key is corrupt")?;

    let accounts = Arc::new(Accounts::default());
    accounts.reload(&store).await?;
    let metrics = Arc::new(Metrics::new());

    let delivery_wake = Arc::new(tokio::sync::Notify::new());
    let accounts_wake = Arc::new(tokio::sync::Notify::new());
    let live_nodes = Arc::new(std::sync::atomic::AtomicUsize::new(1));
    let webhooks_version = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let webhook_client =
        qss_delivery::client::DeliveryClient::new(&qss_delivery::client::ClientConfig {
            timeout: Duration::from_millis(config.webhook.timeout_ms),
            allow_private: config.webhook.allow_private_networks,
            max_idle_per_host: config.webhook.max_in_flight_per_endpoint as usize,
        })
        .context("building the webhook client")?;
    let (tx, rx) = tokio::sync::mpsc::channel(INGEST_QUEUE);
    let aggregation = match &store {
        Store::Sqlite(_) => {
            start_pipeline(&store, &accounts, &clock, &metrics, &delivery_wake, rx).await?
        }
        Store::Postgres(pg) => {
            let signals = cluster::Signals {
                samples: Arc::new(tokio::sync::Notify::new()),
                deliveries: delivery_wake.clone(),
                accounts: accounts_wake.clone(),
                webhooks_version: webhooks_version.clone(),
                live_nodes: live_nodes.clone(),
            };
            start_cluster(pg, &config, &accounts, &clock, &metrics, signals, rx)?
        }
    };

    let state = AppState {
        config: Arc::new(ApiConfig {
            public_url: config.public_url(),
            token_ttl_seconds: config.auth.token_ttl_seconds,
            max_body_bytes: config.ingest.max_body_bytes,
            max_samples: config.ingest.max_samples,
            max_sample_age_seconds: config.ingest.max_sample_age_seconds,
            ingest_commit_timeout_ms: config.ingest.commit_timeout_ms,
            webhook_timeout_ms: config.webhook.timeout_ms,
            webhook_allow_private_networks: config.webhook.allow_private_networks,
            webhook_revalidate_hours: config.webhook.revalidate_hours,
        }),
        store: store.clone(),
        accounts: accounts.clone(),
        auth: Arc::new(Default::default()),
        admin_token_hash: Arc::new(admin_hash),
        page_key: Arc::new(page_key),
        ingest: tx,
        clock: clock.clone(),
        metrics: metrics.clone(),
        webhook_client: webhook_client.clone(),
        delivery_wake: delivery_wake.clone(),
        webhooks_version: webhooks_version.clone(),
        shutting_down: Arc::new(AtomicBool::new(false)),
        limiter: Arc::new(qss_api::ratelimit::Limiter::new(
            qss_api::ratelimit::RateLimits {
                light: config.rate_limit.light,
                heavy: config.rate_limit.heavy,
                ingest: config.rate_limit.ingest,
                oauth: config.rate_limit.oauth,
            },
            live_nodes.clone(),
        )),
        ingest_permits: Arc::new(tokio::sync::Semaphore::new(
            config.ingest.max_in_flight.max(1),
        )),
    };
    let dispatcher = Arc::new(dispatch::Dispatcher::new(
        store.clone(),
        webhook_client,
        clock.clone(),
        metrics.clone(),
        dispatch::DispatchConfig {
            timeout: Duration::from_millis(config.webhook.timeout_ms),
            schedule: config.webhook.retry_schedule_seconds.clone(),
            lease_ms: config.webhook.lease_seconds as i64 * 1000,
            max_in_flight_per_endpoint: config.webhook.max_in_flight_per_endpoint.max(1) as usize,
            revalidate_ms: config.webhook.revalidate_hours as i64 * 3_600_000,
            live_nodes: live_nodes.clone(),
        },
        delivery_wake,
        webhooks_version,
    ));
    let dispatcher_task = tokio::spawn(dispatcher.run(shutdown.clone()));

    let background = spawn_background(
        store.clone(),
        accounts,
        accounts_wake,
        clock,
        metrics,
        config.webhook.delivery_log_days,
        shutdown.clone(),
    );
    let addr = listener.local_addr()?;
    let app = qss_api::router(state.clone());
    let shutting_down = state.shutting_down.clone();
    let drain_deadline = Duration::from_millis(config.webhook.timeout_ms) + Duration::from_secs(4);
    // Should the server task be dropped without a shutdown (its runtime ends, as in tests that
    // drop a server), the aggregation still stops: its thread has a runtime of its own.
    let aggregation_guard = aggregation.stop.clone().drop_guard();
    let task = tokio::spawn(async move {
        let _aggregation_guard = aggregation_guard;
        let signal = shutdown.clone();
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            signal.cancelled().await;
            shutting_down.store(true, Ordering::SeqCst);
        });
        // In-flight requests get until the deadline of SPEC 8; then the process stops anyway
        // (an unanswered batch was not acknowledged, so nothing acknowledged is lost).
        let deadline = async {
            shutdown.cancelled().await;
            tokio::time::sleep(drain_deadline).await;
        };
        tokio::select! {
            result = serve => result.context("http server")?,
            _ = deadline => tracing::warn!("in-flight requests did not finish before the shutdown deadline"),
        }
        // No handler waits on the ingest queue any more; the aggregation commits what is
        // still queued and stops.
        background.abort();
        // Attempts in flight finish (bounded by the attempt timeout).
        let _ = dispatcher_task.await;
        aggregation.stop().await?;
        tracing::info!("stopped");
        Ok(())
    });
    Ok(Server {
        addr,
        generated_admin_token,
        state,
        task,
    })
}

/// The aggregation, whichever the backend: stopped last, after the HTTP server.
struct Aggregation {
    stop: CancellationToken,
    threads: Vec<std::thread::JoinHandle<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Aggregation {
    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        for t in self.threads {
            tokio::task::spawn_blocking(move || t.join())
                .await?
                .map_err(|_| anyhow::anyhow!("aggregation thread panicked"))?;
        }
        Ok(())
    }
}

/// SQLite: one aggregation thread, the only writer, after rebuilding its state.
async fn start_pipeline(
    store: &Store,
    accounts: &Arc<Accounts>,
    clock: &Arc<dyn Clock>,
    metrics: &Arc<Metrics>,
    delivery_wake: &Arc<tokio::sync::Notify>,
    rx: tokio::sync::mpsc::Receiver<qss_api::IngestJob>,
) -> anyhow::Result<Aggregation> {
    let mut pipeline = pipeline::Pipeline::new(
        store.clone(),
        accounts.clone(),
        clock.clone(),
        metrics.clone(),
        delivery_wake.clone(),
    );
    pipeline
        .recover()
        .await
        .context("recovering aggregation state")?;
    let stop = CancellationToken::new();
    let thread = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("qss-aggregation".into())
            .spawn(move || pipeline.run(rx, stop))
            .context("starting the aggregation thread")?
    };
    Ok(Aggregation {
        stop,
        threads: vec![thread],
        tasks: Vec::new(),
    })
}

/// PostgreSQL: an ingest writer appending to the shared log, the partition worker on its own
/// thread, and the notification listener.
fn start_cluster(
    pg: &PgStore,
    config: &Config,
    accounts: &Arc<Accounts>,
    clock: &Arc<dyn Clock>,
    metrics: &Arc<Metrics>,
    signals: cluster::Signals,
    rx: tokio::sync::mpsc::Receiver<qss_api::IngestJob>,
) -> anyhow::Result<Aggregation> {
    let stop = CancellationToken::new();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let mut tasks: Vec<tokio::task::JoinHandle<()>> = (0..cluster::INGEST_WRITERS)
        .map(|_| {
            tokio::spawn(cluster::ingest_writer(
                pg.clone(),
                accounts.clone(),
                metrics.clone(),
                rx.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let samples_wake = signals.samples.clone();
    let worker = cluster::PartitionWorker::new(
        pg.clone(),
        config.postgres.lease_seconds as i64 * 1000,
        accounts.clone(),
        clock.clone(),
        metrics.clone(),
        signals.deliveries.clone(),
        signals.live_nodes.clone(),
    );
    let listener = tokio::spawn(cluster::listen(
        config.database.clone(),
        signals,
        stop.clone(),
    ));
    let thread = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("qss-aggregation".into())
            .spawn(move || worker.run(samples_wake, stop))
            .context("starting the aggregation thread")?
    };
    tasks.push(listener);
    Ok(Aggregation {
        stop,
        threads: vec![thread],
        tasks,
    })
}

/// Periodic chores: the accounts cache (changes made by `qss admin`), expired tokens.
fn spawn_background(
    store: Store,
    accounts: Arc<Accounts>,
    accounts_wake: Arc<tokio::sync::Notify>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    delivery_log_days: u32,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut n: u64 = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                // Another node changed an account: reload now, not at the next second.
                _ = accounts_wake.notified() => {
                    if let Err(e) = accounts.reload(&store).await {
                        tracing::warn!(error = %e, "reloading accounts failed");
                    }
                    continue;
                }
                _ = shutdown.cancelled() => return,
            }
            n += 1;
            let now = clock.now_ms();
            if let Err(e) =
                background_pass(&store, &accounts, &metrics, n, now, delivery_log_days).await
            {
                tracing::warn!(error = %e, "background refresh failed");
            }
        }
    })
}

/// One second's chores: the accounts cache, the pending-deliveries gauge; hourly-ish token
/// purge; retention at start and then every ten minutes (a lowered value applies at the next
/// pass, well within the hour the SPEC allows).
async fn background_pass(
    store: &Store,
    accounts: &Accounts,
    metrics: &Metrics,
    n: u64,
    now: i64,
    delivery_log_days: u32,
) -> Result<(), qss_store::StoreError> {
    accounts.reload(store).await?;
    metrics
        .pending_deliveries
        .set(store.pending_deliveries().await?);
    if n.is_multiple_of(600) {
        store.purge_expired_tokens(now - 3_600_000).await?;
    }
    if n == 1 || n.is_multiple_of(600) {
        retention_pass(store, now, delivery_log_days).await?;
    }
    Ok(())
}

/// One retention pass: events and raw samples past each account's `retention_days`, and the
/// data of deleted accounts, batch by batch.
async fn retention_pass(
    store: &Store,
    now: i64,
    delivery_log_days: u32,
) -> Result<(), qss_store::StoreError> {
    let started = std::time::Instant::now();
    let mut cutoffs = std::collections::HashMap::new();
    let mut deleted = 0usize;
    for a in store.all_accounts().await? {
        let cutoff = now - i64::from(a.settings.retention_days) * 86_400_000;
        while let n @ 1.. = store.delete_old_events(&a.account_id, cutoff).await? {
            deleted += n;
        }
        cutoffs.insert(a.account_id, cutoff);
    }
    for account_id in store.deleted_accounts().await? {
        while let n @ 1.. = store.purge_account_batch(&account_id).await? {
            deleted += n;
        }
    }
    let log_cutoff = now - i64::from(delivery_log_days) * 86_400_000;
    while let n @ 1.. = store.delete_old_deliveries(log_cutoff).await? {
        deleted += n;
    }
    let boundary = now - qss_engine::aggregator::CLOSED_MEMORY_MS;
    while let n @ 1.. = store.delete_finished_instances(boundary).await? {
        deleted += n;
    }
    let keep_from = store.samples_needed_from().await?;
    while let n @ 1.. = store.delete_old_samples(&cutoffs, keep_from).await? {
        deleted += n;
    }
    if deleted > 0 {
        tracing::info!(
            deleted,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "retention pass"
        );
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
