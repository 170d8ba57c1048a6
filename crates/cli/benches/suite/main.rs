//! The benchmark suite: `cargo bench -p qss --bench suite`.
//!
//! One run measures, on this machine, each figure of issue 4 beside a ceiling measured in the
//! same run (see each part's module): ingest at batch sizes 1, 100 and 1,000 (HTTP, SQLite and
//! JSON ceilings), freshness from window close to webhook at 10,000 participants, webhook
//! deliveries/s, events-page latency at 1 and 10 million events, and resident memory at 10,000
//! and 100,000 participants; then ingest, deliveries and events pages on PostgreSQL with one
//! and three nodes. It prints markdown tables, writes the results as JSON to
//! `benchmarks/latest.json` and, when every part ran, replaces the table between the
//! `suite:begin` and `suite:end` markers of BENCHMARKS.md. Any run that includes the
//! `postgres` part replaces the table between the `postgres:begin` and `postgres:end` markers
//! (and writes `benchmarks/postgres.json`), so that part can be measured alone.
//!
//! Knobs: `QSS_BENCH_PARTS` (comma-separated subset of
//! `ingest,freshness,delivery,pages,memory,postgres`), `QSS_BENCH_EVENTS` (default
//! `1000000,10000000`), `QSS_BENCH_PARTICIPANTS` (default `10000,100000`),
//! `QSS_BENCH_PG_EVENTS` (default `1000000`). A partial run writes its whole JSON to
//! `<target>/bench-suite.json`.

/// The same allocator as `qss`: jemalloc, or the system's without the `jemalloc` feature.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod common;
mod delivery;
mod freshness;
mod ingest;
mod memory;
mod pages;
mod postgres;
mod receiver;
mod report;

use std::time::Instant;

const PARTS: [&str; 6] = [
    "ingest",
    "freshness",
    "delivery",
    "pages",
    "memory",
    "postgres",
];

fn main() -> anyhow::Result<()> {
    // As `qss` itself does (crates/cli/src/main.rs), so that the figures are the shipped ones.
    #[cfg(target_os = "linux")]
    rustix::thread::disable_transparent_huge_pages(true)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Ok(child) = std::env::var("QSS_BENCH_CHILD") {
        let n = child
            .strip_prefix("memory:")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("QSS_BENCH_CHILD={child}: expected memory:<n>"))?;
        return rt.block_on(memory::child(n));
    }
    let parts: Vec<String> = match std::env::var("QSS_BENCH_PARTS") {
        Ok(p) => p.split(',').map(|s| s.trim().to_string()).collect(),
        Err(_) => PARTS.iter().map(|s| s.to_string()).collect(),
    };
    if let Some(unknown) = parts.iter().find(|p| !PARTS.contains(&p.as_str())) {
        anyhow::bail!("QSS_BENCH_PARTS: unknown part {unknown:?} (known: {PARTS:?})");
    }
    let wants = |p: &str| parts.iter().any(|x| x == p);
    let list = |name: &str, default: &str| -> Vec<usize> {
        std::env::var(name)
            .unwrap_or_else(|_| default.to_string())
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect()
    };

    let started = Instant::now();
    let mut results = report::Results::default();
    if wants("ingest") {
        for batch in [1, 100, 1000] {
            eprintln!("ingest, batch {batch} ...");
            results.ingest.push(rt.block_on(ingest::run(batch))?);
        }
    }
    if wants("freshness") {
        eprintln!("freshness at {} participants ...", freshness::PARTICIPANTS);
        results.freshness = Some(rt.block_on(freshness::run())?);
    }
    if wants("delivery") {
        eprintln!("webhook deliveries ...");
        results.delivery = Some(rt.block_on(delivery::run())?);
    }
    if wants("pages") {
        let sizes = list("QSS_BENCH_EVENTS", "1000000,10000000");
        eprintln!("events pages at {sizes:?} events ...");
        results.pages = rt.block_on(pages::run(&sizes))?;
    }
    if wants("memory") {
        for n in list("QSS_BENCH_PARTICIPANTS", "10000,100000") {
            eprintln!("memory at {n} participants ...");
            results.memory.push(memory::run(n)?);
        }
    }
    if wants("postgres") {
        eprintln!("PostgreSQL, one and three nodes ...");
        results.postgres = rt.block_on(postgres::run())?;
    }
    results.seconds = started.elapsed().as_secs_f64();
    let complete = PARTS.iter().all(|p| wants(p));
    report::write(&results, &parts, complete)
}
