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

// ---------------------------------------------------------------------------------------------------
// What fuzzing found, one named test each (the inputs are also in fuzz/regressions/config/)
// ---------------------------------------------------------------------------------------------------

const MINIMAL: &str =
    "[cluster]\nname = \"c\"\nnodes = [{ id = 1, addr = \"127.0.0.1:7401\" }]\n[node]\nid = 1\n";

/// Found by the config target: `cohort config check` printed a path from the environment with its
/// control characters into a comment, so the effective configuration was not valid TOML (and a
/// terminal would have acted on them). Comments now escape them.
#[test]
fn effective_configuration_with_a_control_character_in_a_path_loads_back() {
    let env = vec![("COHORT__NODE__DATA_DIR".to_string(), " data\u{8}#\u{1b}[31m".to_string())];
    let loaded =
        cohort_actors::settings_load::load_texts(&[("file:a.toml", MINIMAL)], &env, &[]).expect("loads");
    let rendered = cohort_actors::settings_load::render_effective(&loaded);
    assert!(!rendered.chars().any(|c| c.is_control() && c != '\n'), "{rendered}");
    assert!(rendered.contains("means  data\\u{8}#\\u{1b}[31m/events.jsonl"), "{rendered}");
    let again = cohort_actors::settings_load::load_texts(&[("effective", &rendered)], &[], &[])
        .expect("the effective configuration loads");
    assert_eq!(again.settings, loaded.settings);
}

/// Confirmed with a hand-written input of the config target (the hint of an earlier run): a
/// `log.level` with leading whitespace before a multibyte character panicked inside
/// tracing-subscriber's `EnvFilter` parser while the loader checked it. The loader and the agent now
/// parse every filter through `telemetry::parse_filter`, which trims each directive first.
#[test]
fn a_log_level_with_leading_whitespace_and_a_multibyte_character_loads_without_panicking() {
    for level in [" [é]", " é=debug", "info, é=debug"] {
        let text = format!("{MINIMAL}[log]\nlevel = {level:?}\n");
        let loaded = cohort_actors::settings_load::load_texts(&[("file:a.toml", &text)], &[], &[])
            .unwrap_or_else(|e| panic!("level {level:?} refused: {e}"));
        assert_eq!(loaded.settings.log.level, level);
    }
    // And a reload to it plans without panicking, as SIGHUP would.
    let a = cohort_actors::settings_load::load_texts(&[("file:a.toml", MINIMAL)], &[], &[]).expect("loads");
    let text = format!("{MINIMAL}[log]\nlevel = \" [é]\"\n");
    let b = cohort_actors::settings_load::load_texts(&[("file:a.toml", &text)], &[], &[]).expect("loads");
    let plan = cohort_actors::reload::plan(&a.settings, &b.settings);
    assert_eq!(plan.next.log.level, " [é]");
}
