//! Every saved fuzz input, run through its target in the ordinary test suite: the corpus
//! (`fuzz/corpus/<target>/`, what cargo fuzz kept for coverage) and the regressions
//! (`fuzz/regressions/<target>/`, one file per crash a fuzzer found, kept after the fix).

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files of `fuzz/<kind>/<target>/`, sorted.
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(kind: &str) -> usize {
    let mut n = 0;
    for (target, run) in qss_fuzzing::TARGETS {
        for file in inputs(kind, target) {
            let data = std::fs::read(&file).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{target} panics on {}", file.display());
            n += 1;
        }
    }
    n
}

#[test]
fn every_corpus_input_runs_without_a_panic() {
    let n = replay("corpus");
    // The corpora are committed: an empty replay means they went missing.
    assert!(n >= qss_fuzzing::TARGETS.len(), "only {n} corpus inputs");
}

#[test]
fn every_crash_found_so_far_stays_fixed() {
    replay("regressions");
}

#[test]
fn each_target_has_a_corpus_folder() {
    for (target, _) in qss_fuzzing::TARGETS {
        assert!(
            !inputs("corpus", target).is_empty(),
            "fuzz/corpus/{target}/ is empty or missing"
        );
    }
}
