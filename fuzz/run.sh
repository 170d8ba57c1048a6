#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 600), one after the other, then minimises
# each corpus. Needs the nightly toolchain and cargo-fuzz:
#   rustup toolchain install nightly && cargo install cargo-fuzz
# A crash stops its target's run: its input is in fuzz/artifacts/<target>/. Fix it, copy the
# input to fuzz/regressions/<target>/ (crates/fuzzing/tests/replay.rs runs it in every
# `cargo test`), and run again. Logs: fuzz/logs/<target>.log (not committed).
set -uo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
targets="${TARGETS:-ingest_batch settings_patch listen_verify page_token}"
mkdir -p fuzz/logs
status=0
for t in $targets; do
  echo "== $t for ${seconds}s"
  mkdir -p "fuzz/corpus/$t"
  if cargo +nightly fuzz run "$t" "fuzz/corpus/$t" -- \
      -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=4096 -timeout=10 \
      -print_final_stats=1 > "fuzz/logs/$t.log" 2>&1; then
    grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb|^stat::new_units_added" "fuzz/logs/$t.log"
    grep -E "^#[0-9]+ *DONE" "fuzz/logs/$t.log" | tail -1
    cargo +nightly fuzz cmin "$t" "fuzz/corpus/$t" > "fuzz/logs/$t.cmin.log" 2>&1 || true
    echo "corpus: $(ls "fuzz/corpus/$t" | wc -l) inputs"
  else
    echo "!! $t failed: see fuzz/logs/$t.log and fuzz/artifacts/$t/"
    status=1
  fi
done
exit $status
