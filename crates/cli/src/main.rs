//! The `qss` command: `serve`, `demo`, `simulate`, `listen` and `admin` (SPEC 9). Thin:
//! parsing arguments and printing; the work lives in `qss-server`, `qss-api`, `qss-store` and
//! `qss-sim`.

/// jemalloc (the default `jemalloc` feature): in the 30-minute soak its resident set stayed
/// flat, across the restart too, where the system allocator's crept up with each traffic peak
/// and after the restart's replay, and mimalloc's crept up with the traffic (BENCHMARKS.md,
/// "Soak"). Without the feature, the system allocator, for heap profilers that hook malloc.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Turns transparent huge pages off for the process. Where the heap may have them (mimalloc,
/// the allocator before, advised them for its arenas; a kernel set to `always` gives them to
/// any heap), the kernel's khugepaged merges partly used 2 MiB ranges into whole pages at a
/// moment of its choosing: in a 30-minute soak that lifted the resident set by about 20 MiB in
/// 15 s, with no more live heap (BENCHMARKS.md, "Soak"). A server whose heap is tens of MiB gains
/// nothing measurable from huge pages (the ingest bench was no slower without them), and a
/// resident set that steps at random cannot be capacity-planned.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        eprintln!("qss: could not turn transparent huge pages off ({e}); memory may step up");
    }
}

mod admin;
mod demo;
mod listen;
mod simulate;
mod soak;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use qss_server::Config;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "qss",
    version,
    about = "Quality of Service Subscription server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Flags shared by the commands that read the configuration.
#[derive(Debug, clap::Args)]
struct ConfigArgs {
    /// A TOML configuration file (see config/default.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to bind, e.g. 127.0.0.1:8080.
    #[arg(long)]
    listen: Option<String>,
    /// sqlite://<path>.
    #[arg(long)]
    database: Option<String>,
}

impl ConfigArgs {
    fn load(&self) -> anyhow::Result<Config> {
        let mut flags = Vec::new();
        if let Some(l) = &self.listen {
            flags.push(("listen".to_string(), l.clone()));
        }
        if let Some(d) = &self.database {
            flags.push(("database".to_string(), d.clone()));
        }
        Config::load(self.config.as_deref(), std::env::vars(), &flags)
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(ConfigArgs),
    /// Run everything on one machine with no setup: a temporary database, a demo account and
    /// simulated meetings and calls.
    Demo {
        /// Address to bind.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        duration: Option<u64>,
        /// Do not open the dashboard in the desktop's browser (it is opened only where there
        /// is a desktop: macOS, or DISPLAY / WAYLAND_DISPLAY set).
        #[arg(long)]
        no_browser: bool,
    },
    /// Drive a server with realistic simulated traffic and report how it answered.
    Simulate(simulate::SimulateArgs),
    /// A long run against a real `qss serve`, restarted half way: memory over time, samples
    /// acknowledged against counted, deliveries expected against received (not for CI).
    Soak(soak::SoakArgs),
    /// Receive webhooks: answer the handshake, verify both signatures, print each event as a
    /// JSON line.
    Listen {
        /// Port on 127.0.0.1.
        #[arg(long, default_value_t = 9000)]
        port: u16,
        /// The subscription's secret token.
        #[arg(long, env = "QSS_LISTEN_SECRET")]
        secret: String,
    },
    /// Manage accounts, credentials and ingest keys directly on the database (may run while
    /// servers use it).
    Admin {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("QSS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> std::process::ExitCode {
    no_transparent_huge_pages();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => {
            init_tracing();
            runtime().and_then(|rt| rt.block_on(serve(args)))
        }
        Command::Demo {
            listen,
            duration,
            no_browser,
        } => {
            init_tracing();
            runtime().and_then(|rt| rt.block_on(demo::run(&listen, duration, !no_browser)))
        }
        Command::Simulate(args) => runtime().and_then(|rt| rt.block_on(simulate::run(args))),
        Command::Soak(args) => runtime().and_then(|rt| rt.block_on(soak::run(args))),
        Command::Listen { port, secret } => {
            runtime().and_then(|rt| rt.block_on(listen::run(port, secret)))
        }
        Command::Admin { config, command } => admin::run(&config, command),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qss: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

async fn serve(args: ConfigArgs) -> anyhow::Result<()> {
    let config = args.load()?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let shutdown = CancellationToken::new();
    let server = qss_server::start(
        config,
        listener,
        Arc::new(qss_api::SystemClock),
        shutdown.clone(),
    )
    .await?;
    if let Some(token) = &server.generated_admin_token {
        println!("Generated admin token (shown once, stored hashed): {token}");
    }
    tracing::info!(addr = %server.addr, "listening");
    tokio::spawn(async move {
        qss_server::shutdown_signal().await;
        tracing::info!("shutting down");
        shutdown.cancel();
    });
    server.wait().await
}
