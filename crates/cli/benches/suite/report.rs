//! The suite's results: JSON, a markdown table, and BENCHMARKS.md.

use std::path::PathBuf;

use serde::Serialize;

use crate::delivery::Delivery;
use crate::freshness::Freshness;
use crate::ingest::{CLIENTS, IngestRun};
use crate::memory::Memory;
use crate::pages::Pages;

const BEGIN: &str = "<!-- suite:begin -->";
const END: &str = "<!-- suite:end -->";
const COMMAND: &str = "cargo bench -p qss --bench suite";

#[derive(Debug, Default, Serialize)]
pub struct Results {
    pub ingest: Vec<IngestRun>,
    pub freshness: Option<Freshness>,
    pub delivery: Option<Delivery>,
    pub pages: Vec<Pages>,
    pub memory: Vec<Memory>,
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
        row([
            format!(
                "webhook deliveries, {} offered/s, one endpoint",
                thousands(d.offered_per_s as f64)
            ),
            format!(
                "**{} deliveries/s** ({} of {}; commit → arrival p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms)",
                thousands(d.deliveries_per_s),
                thousands(d.delivered as f64),
                thousands(d.offered as f64),
                d.emission_to_arrival.p50_ms,
                d.emission_to_arrival.p99_ms,
                d.emission_to_arrival.max_ms
            ),
            format!(
                "plain POSTs of the same bodies, 16 in flight: {} req/s",
                thousands(d.http_ceiling_requests_per_s)
            ),
            pct(d.deliveries_per_s, d.http_ceiling_requests_per_s),
            format!(
                "≥ 10,000/s: {}",
                check(d.deliveries_per_s >= 10_000.0 && d.delivered == d.offered)
            ),
        ]);
        row([
            "webhook deliveries, a backlog drained, one endpoint".to_string(),
            format!(
                "**{} deliveries/s** ({} committed at once; mean attempt {:.2} ms in whole ms)",
                thousands(d.backlog_drain_per_s),
                thousands(d.backlog as f64),
                d.mean_attempt_ms
            ),
            "(as above)".to_string(),
            pct(d.backlog_drain_per_s, d.http_ceiling_requests_per_s),
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

pub fn write(r: &Results, complete: bool) -> anyhow::Result<()> {
    let machine = machine();
    let commit = commit();
    let date = qss_domain::timefmt::format_ms(crate::common::now_ms());
    let table = table(r);
    println!("\n{table}");
    println!("whole run: {:.0} s", r.seconds);
    let json = serde_json::json!({
        "date": date, "commit": commit, "command": COMMAND, "machine": machine,
        "complete": complete, "results": r,
    });
    let text = serde_json::to_string_pretty(&json)?;
    let partial = target_dir().join("bench-suite.json");
    std::fs::write(&partial, &text)?;
    println!("JSON: {}", partial.display());
    if !complete {
        return Ok(());
    }
    let dir = repo_root().join("benchmarks");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("latest.json"), &text)?;
    let section = format!(
        "{BEGIN}\n`{COMMAND}`: {date}, commit {commit}, {} ({} cores, {:.0} GiB), {}, kernel {}; \
         the whole run took {:.0} s. JSON: `benchmarks/latest.json`.\n\n{table}{END}",
        machine.cpu, machine.cores, machine.memory_gib, machine.os, machine.kernel, r.seconds
    );
    let path = repo_root().join("BENCHMARKS.md");
    let doc = std::fs::read_to_string(&path)?;
    let doc = match (doc.find(BEGIN), doc.find(END)) {
        (Some(b), Some(e)) if b < e => format!("{}{section}{}", &doc[..b], &doc[e + END.len()..]),
        _ => format!("{doc}\n{section}\n"),
    };
    std::fs::write(&path, doc)?;
    println!("BENCHMARKS.md and benchmarks/latest.json updated");
    Ok(())
}
