//! The suite's results: JSON, a markdown table, and BENCHMARKS.md.

use std::path::PathBuf;

use serde::Serialize;

use crate::delivery::Delivery;
use crate::freshness::Freshness;
use crate::ingest::{CLIENTS, IngestRun};
use crate::memory::Memory;
use crate::pages::Pages;
use crate::postgres::{BACKLOG, INGEST_BATCH, PgIngest, PgPages, Postgres};

const BEGIN: &str = "<!-- suite:begin -->";
const END: &str = "<!-- suite:end -->";
const PG_BEGIN: &str = "<!-- postgres:begin -->";
const PG_END: &str = "<!-- postgres:end -->";
const COMMAND: &str = "cargo bench -p qss --bench suite";

#[derive(Debug, Default, Serialize)]
pub struct Results {
    pub ingest: Vec<IngestRun>,
    pub freshness: Option<Freshness>,
    pub delivery: Option<Delivery>,
    pub pages: Vec<Pages>,
    pub memory: Vec<Memory>,
    pub postgres: Option<Postgres>,
    pub seconds: f64,
}

#[derive(Debug, Serialize)]
struct Machine {
    cpu: String,
    cores: usize,
    memory_gib: f64,
    os: String,
    kernel: String,
}

fn machine() -> Machine {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let memory_kib: f64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let os = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_default();
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_gib: memory_kib / 1024.0 / 1024.0,
        os,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
    }
}

/// The short commit, with `-dirty` when the tree has uncommitted changes.
fn commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(repo_root())
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let hash = git(&["rev-parse", "--short", "HEAD"]);
    let dirty = !git(&["status", "--porcelain", "--untracked-files=no"]).is_empty();
    if dirty { format!("{hash}-dirty") } else { hash }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn target_dir() -> PathBuf {
    // Benches run from `<target>/release/deps/`.
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| "target".into())
}

fn pct(part: f64, whole: f64) -> String {
    if whole > 0.0 {
        format!("{:.0} %", 100.0 * part / whole)
    } else {
        "n/a".into()
    }
}

fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 && c != '-' {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn check(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

/// The markdown table: one row per figure, its ceiling, the fraction, the target.
pub fn table(r: &Results) -> String {
    let mut t = String::from(
        "| measure | value | ceiling, same run | fraction of ceiling | target |\n|---|---|---|---|---|\n",
    );
    let mut row = |cells: [String; 5]| {
        t.push_str(&format!("| {} |\n", cells.join(" | ")));
    };
    for i in &r.ingest {
        let target = if i.batch == 100 {
            format!(
                "≥ 200,000/s: {}",
                check(i.samples_per_s >= 200_000.0 && i.failed == 0)
            )
        } else {
            String::new()
        };
        row([
            format!("ingest, batch {}, {CLIENTS} clients", i.batch),
            format!(
                "**{} samples/s** ({} req/s, p50 {:.1} ms, p99 {:.1} ms, {} failed)",
                thousands(i.samples_per_s),
                thousands(i.requests_per_s),
                i.latency.p50_ms,
                i.latency.p99_ms,
                i.failed
            ),
            format!(
                "HTTP, same bodies, no work: {} req/s",
                thousands(i.http_ceiling_requests_per_s)
            ),
            pct(i.requests_per_s, i.http_ceiling_requests_per_s),
            target,
        ]);
        let sqlite_target = if i.batch == 100 {
            format!(
                "≥ 50 %: {}",
                check(i.samples_per_s >= 0.5 * i.sqlite_ceiling_samples_per_s)
            )
        } else {
            String::new()
        };
        row([
            String::new(),
            format!(
                "{:.0} samples per group commit, aggregation thread {:.0} % busy",
                i.samples_per_group,
                100.0 * i.aggregation_busy
            ),
            format!(
                "SQLite, same rows, {:.0} per transaction: {} rows/s",
                i.samples_per_group.round().max(1.0),
                thousands(i.sqlite_ceiling_samples_per_s)
            ),
            pct(i.samples_per_s, i.sqlite_ceiling_samples_per_s),
            sqlite_target,
        ]);
        row([
            String::new(),
            String::new(),
            format!(
                "JSON parse, same bodies, one core: serde_json `Value` {} samples/s; qss's validating parser {} samples/s",
                thousands(i.json_value_samples_per_s_one_core),
                thousands(i.json_qss_samples_per_s_one_core)
            ),
            format!(
                "{} / {}",
                pct(i.samples_per_s, i.json_value_samples_per_s_one_core),
                pct(i.samples_per_s, i.json_qss_samples_per_s_one_core)
            ),
            String::new(),
        ]);
    }
    let delivery_ceiling = r
        .delivery
        .as_ref()
        .map_or(0.0, |d| d.http_ceiling_requests_per_s);
    if let Some(f) = &r.freshness {
        // The least time 10,000 webhooks take at the plain-HTTP rate measured below.
        let floor_ms = if delivery_ceiling > 0.0 {
            f.participants as f64 / delivery_ceiling * 1000.0
        } else {
            0.0
        };
        row([
            format!(
                "freshness, window close → webhook received, {} participants ({} s windows, grace {} s)",
                thousands(f.participants as f64),
                f.interval_seconds,
                f.grace_seconds
            ),
            format!(
                "**p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms** ({} of {} events; emitted p50 {:.0} ms, p99 {:.0} ms after close)",
                f.close_to_received.p50_ms,
                f.close_to_received.p99_ms,
                f.close_to_received.max_ms,
                thousands(f.events_received as f64),
                thousands(f.events_expected as f64),
                f.close_to_emitted.p50_ms,
                f.close_to_emitted.p99_ms
            ),
            format!(
                "{} webhooks at the plain-HTTP rate: {:.0} ms",
                thousands(f.participants as f64),
                floor_ms
            ),
            format!(
                "{} (floor / p99)",
                pct(floor_ms, f.close_to_received.p99_ms)
            ),
            format!(
                "p99 < 1 s: {}",
                check(
                    f.close_to_received.p99_ms < 1000.0 && f.events_received == f.events_expected
                )
            ),
        ]);
    }
    if let Some(d) = &r.delivery {
        let run = &d.run;
        row([
            format!(
                "webhook deliveries, {} offered/s, one endpoint",
                thousands(run.offered_per_s as f64)
            ),
            format!(
                "**{} deliveries/s** ({} of {}; commit → arrival p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms)",
                thousands(run.deliveries_per_s),
                thousands(run.delivered as f64),
                thousands(run.offered as f64),
                run.emission_to_arrival.p50_ms,
                run.emission_to_arrival.p99_ms,
                run.emission_to_arrival.max_ms
            ),
            format!(
                "plain POSTs of the same bodies, 16 in flight: {} req/s",
                thousands(d.http_ceiling_requests_per_s)
            ),
            pct(run.deliveries_per_s, d.http_ceiling_requests_per_s),
            format!(
                "≥ 10,000/s: {}",
                check(run.deliveries_per_s >= 10_000.0 && run.delivered == run.offered)
            ),
        ]);
        row([
            "webhook deliveries, a backlog drained, one endpoint".to_string(),
            format!(
                "**{} deliveries/s** ({} committed at once; mean attempt {:.2} ms in whole ms)",
                thousands(run.backlog_drain_per_s),
                thousands(run.backlog as f64),
                run.mean_attempt_ms
            ),
            "(as above)".to_string(),
            pct(run.backlog_drain_per_s, d.http_ceiling_requests_per_s),
            String::new(),
        ]);
    }
    for p in &r.pages {
        let target = if p.events >= 10_000_000 {
            format!(
                "p99 < 20 ms: {}",
                check(p.first_page.p99_ms < 20.0 && p.failed == 0)
            )
        } else {
            String::new()
        };
        row([
            format!(
                "events page (30), {} events ({:.1} GB)",
                thousands(p.events as f64),
                p.database_bytes as f64 / 1e9
            ),
            format!(
                "**first page p50 {:.2} ms, p99 {:.2} ms**; next page p50 {:.2} ms, p99 {:.2} ms ({:.1} events a page, {} failed; filled at {} events/s)",
                p.first_page.p50_ms,
                p.first_page.p99_ms,
                p.next_page.p50_ms,
                p.next_page.p99_ms,
                p.mean_page_len,
                p.failed,
                thousands(p.fill_events_per_s)
            ),
            format!(
                "the same query on the store, no HTTP: p50 {:.2} ms, p99 {:.2} ms",
                p.store_ceiling.p50_ms, p.store_ceiling.p99_ms
            ),
            format!(
                "{} (store p99 / page p99)",
                pct(p.store_ceiling.p99_ms, p.first_page.p99_ms)
            ),
            target,
        ]);
    }
    for m in &r.memory {
        let target = if m.participants >= 100_000 {
            format!("< 300 MB: {}", check(m.rss_mib * 1.048_576 < 300.0))
        } else {
            String::new()
        };
        row([
            format!(
                "resident memory, {} participants reporting",
                thousands(m.participants as f64)
            ),
            format!(
                "**{:.0} MiB** VmRSS (peak {:.0} MiB; {} samples in)",
                m.rss_mib,
                m.hwm_mib,
                thousands(m.samples as f64)
            ),
            format!("idle server: {:.0} MiB", m.idle_server_rss_mib),
            format!(
                "{} bytes per participant",
                thousands(m.bytes_per_participant)
            ),
            target,
        ]);
    }
    t
}

/// The PostgreSQL table: each figure with one node, with three, and SQLite's of the same run.
pub fn postgres_table(r: &Results, p: &Postgres) -> String {
    const NOT_RUN: &str = "(not in this run)";
    let mut t = String::from(
        "| measure | PostgreSQL, one node | PostgreSQL, three nodes | SQLite, same run |\n|---|---|---|---|\n",
    );
    let mut row = |c: [String; 4]| {
        t.push_str(&format!("| {} |\n", c.join(" | ")));
    };
    let ingest = |i: &PgIngest| {
        format!(
            "**{} samples/s** ({} req/s, p50 {:.1} ms, p99 {:.1} ms, {} failed; {:.0} samples per append commit, {:.0} % of the time appending per node)",
            thousands(i.samples_per_s),
            thousands(i.requests_per_s),
            i.latency.p50_ms,
            i.latency.p99_ms,
            i.failed,
            i.samples_per_append,
            100.0 * i.writer_busy
        )
    };
    let cells = |f: &dyn Fn(usize) -> Option<String>| [f(1), f(3)].map(Option::unwrap_or_default);
    let [one, three] = cells(&|n| p.ingest.iter().find(|i| i.nodes == n).map(ingest));
    let sqlite =
        r.ingest
            .iter()
            .find(|i| i.batch == INGEST_BATCH)
            .map_or(NOT_RUN.to_string(), |i| {
                format!(
                    "{} samples/s (p50 {:.1} ms, p99 {:.1} ms, {} failed)",
                    thousands(i.samples_per_s),
                    i.latency.p50_ms,
                    i.latency.p99_ms,
                    i.failed
                )
            });
    row([
        format!("ingest, batch {INGEST_BATCH}, {CLIENTS} clients"),
        one,
        three,
        sqlite,
    ]);

    let delivery = |n: usize| p.delivery.iter().find(|d| d.nodes == n).map(|d| &d.run);
    let [one, three] = cells(&|n| {
        delivery(n).map(|d| {
            format!(
                "**{} deliveries/s** ({} of {}, committed at {}/s; commit → arrival p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms)",
                thousands(d.deliveries_per_s),
                thousands(d.delivered as f64),
                thousands(d.offered as f64),
                thousands(d.committed_per_s),
                d.emission_to_arrival.p50_ms,
                d.emission_to_arrival.p99_ms,
                d.emission_to_arrival.max_ms
            )
        })
    });
    let sqlite = r.delivery.as_ref().map_or(NOT_RUN.to_string(), |d| {
        format!(
            "{} deliveries/s (p50 {:.0} ms, p99 {:.0} ms)",
            thousands(d.run.deliveries_per_s),
            d.run.emission_to_arrival.p50_ms,
            d.run.emission_to_arrival.p99_ms
        )
    });
    let rate = p.delivery.first().map_or(0, |d| d.run.offered_per_s);
    row([
        format!(
            "webhook deliveries, {} offered/s, one endpoint",
            thousands(rate as f64)
        ),
        one,
        three,
        sqlite,
    ]);
    let [one, three] = cells(&|n| {
        delivery(n).map(|d| {
            format!(
                "**{} deliveries/s** from the commit ({} delivered; the commit of {} events took {:.1} s, {} events/s; mean attempt {:.2} ms in whole ms)",
                thousands(d.backlog_after_commit_per_s),
                thousands(d.backlog as f64),
                thousands(d.backlog_per_commit as f64),
                d.backlog_commit_s,
                thousands(d.backlog_per_commit as f64 / d.backlog_commit_s.max(1e-9)),
                d.mean_attempt_ms
            )
        })
    });
    let sqlite = r.delivery.as_ref().map_or(NOT_RUN.to_string(), |d| {
        format!(
            "{} deliveries/s after the last of {} commits of {} ({} deliveries/s from the first commit's start)",
            thousands(d.run.backlog_after_commit_per_s),
            d.run.backlog.div_ceil(d.run.backlog_per_commit.max(1)),
            thousands(d.run.backlog_per_commit as f64),
            thousands(d.run.backlog_drain_per_s)
        )
    });
    row([
        format!(
            "webhook deliveries, a backlog of {} drained, one endpoint",
            thousands(BACKLOG as f64)
        ),
        one,
        three,
        sqlite,
    ]);

    let pages = |n: usize| p.pages.iter().find(|x| x.nodes == n).map(|x| &x.pages);
    let latencies = |x: &Pages| {
        format!(
            "first page p50 {:.2} ms, p99 {:.2} ms; next page p50 {:.2} ms, p99 {:.2} ms",
            x.first_page.p50_ms, x.first_page.p99_ms, x.next_page.p50_ms, x.next_page.p99_ms
        )
    };
    let store = |x: &Pages| {
        format!(
            "p50 {:.2} ms, p99 {:.2} ms",
            x.store_ceiling.p50_ms, x.store_ceiling.p99_ms
        )
    };
    if let Some(first) = p.pages.first().map(|x: &PgPages| &x.pages) {
        let sqlite = r.pages.iter().find(|x| x.events == first.events);
        let [one, three] = cells(&|n| {
            pages(n).map(|x| {
                format!(
                    "**{}** ({:.1} events a page, {} failed)",
                    latencies(x),
                    x.mean_page_len,
                    x.failed
                )
            })
        });
        row([
            format!(
                "events page (30), {} events ({:.1} GB; filled at {} events/s)",
                thousands(first.events as f64),
                first.database_bytes as f64 / 1e9,
                thousands(first.fill_events_per_s)
            ),
            one,
            three,
            sqlite.map_or(NOT_RUN.to_string(), latencies),
        ]);
        let [one, three] = cells(&|n| pages(n).map(store));
        row([
            "the same first-page query on the store, no HTTP".to_string(),
            one,
            three,
            sqlite.map_or(NOT_RUN.to_string(), store),
        ]);
    }
    t
}

/// `doc` with the text between `begin` and `end` (markers included) replaced by `section`, or
/// `section` appended when the markers are missing.
fn replace_section(doc: &str, begin: &str, end: &str, section: &str) -> String {
    match (doc.find(begin), doc.find(end)) {
        (Some(b), Some(e)) if b < e => format!("{}{section}{}", &doc[..b], &doc[e + end.len()..]),
        _ => format!("{doc}\n{section}\n"),
    }
}

pub fn write(r: &Results, parts: &[String], complete: bool) -> anyhow::Result<()> {
    let machine = machine();
    let commit = commit();
    let date = qss_domain::timefmt::format_ms(crate::common::now_ms());
    let table = table(r);
    // Only the header when no SQLite part ran (e.g. `QSS_BENCH_PARTS=postgres`).
    if table.lines().count() > 2 {
        println!("\n{table}");
    }
    let pg_table = r.postgres.as_ref().map(|p| postgres_table(r, p));
    if let Some(t) = &pg_table {
        println!("PostgreSQL:\n\n{t}");
    }
    println!("whole run: {:.0} s", r.seconds);
    let json = serde_json::json!({
        "date": date, "commit": commit, "command": COMMAND, "machine": machine,
        "complete": complete, "results": r,
    });
    let text = serde_json::to_string_pretty(&json)?;
    let partial = target_dir().join("bench-suite.json");
    std::fs::write(&partial, &text)?;
    println!("JSON: {}", partial.display());
    let machine_line = format!(
        "{} ({} cores, {:.0} GiB), {}, kernel {}",
        machine.cpu, machine.cores, machine.memory_gib, machine.os, machine.kernel
    );
    let path = repo_root().join("BENCHMARKS.md");
    let dir = repo_root().join("benchmarks");
    if let (Some(p), Some(t)) = (&r.postgres, &pg_table) {
        let command = if complete {
            COMMAND.to_string()
        } else {
            format!("QSS_BENCH_PARTS={} {COMMAND}", parts.join(","))
        };
        let json = serde_json::json!({
            "date": date, "commit": commit, "command": command, "machine": machine,
            "postgres": p,
        });
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("postgres.json"),
            serde_json::to_string_pretty(&json)?,
        )?;
        let section = format!(
            "{PG_BEGIN}\n`{command}`: {date}, commit {commit}, {machine_line}; PostgreSQL {} \
             in a throwaway cluster on the same cores with {} (its commits are not durable; \
             SQLite's are, `synchronous = FULL`); the part took {:.0} s. JSON: \
             `benchmarks/postgres.json`.\n\n{t}{PG_END}",
            p.version, p.settings, p.seconds
        );
        let doc = std::fs::read_to_string(&path)?;
        std::fs::write(&path, replace_section(&doc, PG_BEGIN, PG_END, &section))?;
        println!("BENCHMARKS.md (PostgreSQL section) and benchmarks/postgres.json updated");
    }
    if !complete {
        return Ok(());
    }
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("latest.json"), &text)?;
    let section = format!(
        "{BEGIN}\n`{COMMAND}`: {date}, commit {commit}, {machine_line}; \
         the whole run took {:.0} s. JSON: `benchmarks/latest.json`.\n\n{table}{END}",
        r.seconds
    );
    let doc = std::fs::read_to_string(&path)?;
    std::fs::write(&path, replace_section(&doc, BEGIN, END, &section))?;
    println!("BENCHMARKS.md and benchmarks/latest.json updated");
    Ok(())
}
