//! The fuzz corpus as a regression test: every file of `fuzz/corpus/<target>/` and every saved crash
//! of `fuzz/regressions/<target>/` goes through the same target function the fuzzer runs
//! (`cohort_actors::fuzzing`), so what fuzzing found stays found without cargo-fuzz. The crashes that
//! fuzzing found also have a named test of their own here.

use cohort_actors::fuzzing::{self, TARGETS};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files directly inside `dir`, sorted; none when it does not exist.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> =
        entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

/// Runs `target` on `file`, naming the file if it panics.
fn replay(name: &str, target: fuzzing::Target, file: &Path) {
    let data = std::fs::read(file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
    let run = std::panic::catch_unwind(|| target(&data));
    if run.is_err() {
        panic!("fuzz target {name} fails on {} (replay: scripts/fuzz --replay {name} {0})", file.display());
    }
}

#[test]
fn every_corpus_file_and_saved_crash_passes_its_target() {
    let mut replayed = 0;
    for &(name, target) in TARGETS {
        let corpus = files_in(&fuzz_dir().join("corpus").join(name));
        assert!(!corpus.is_empty(), "fuzz/corpus/{name} is empty: run scripts/fuzz --seeds");
        for file in corpus.iter().chain(&files_in(&fuzz_dir().join("regressions").join(name))) {
            replay(name, target, file);
            replayed += 1;
        }
    }
    eprintln!("replayed {replayed} fuzz inputs");
}

#[test]
fn the_seeds_of_every_target_pass_it() {
    for &(name, target) in TARGETS {
        let seeds = fuzzing::seeds(name);
        assert!(!seeds.is_empty(), "target {name} has no seeds");
        for seed in seeds {
            target(&seed);
        }
    }
}
