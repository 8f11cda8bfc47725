//! Writes the seed corpora of the fuzz targets: `fuzz_seeds DIR [TARGET...]` puts each seed of
//! `cohort_actors::fuzzing::seeds(target)` into `DIR/<target>/seed-<first 16 hex digits of its
//! SHA-256>` (all targets when none is named). Existing files are kept; a seed already there is
//! rewritten with the same bytes. `scripts/fuzz --seeds` runs it on `fuzz/corpus`.

use cohort_actors::fuzzing::{seeds, TARGETS};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: fuzz_seeds DIR [TARGET...]");
        return ExitCode::from(2);
    };
    let wanted: Vec<String> = args.collect();
    for want in &wanted {
        if !TARGETS.iter().any(|(name, _)| name == want) {
            eprintln!(
                "unknown fuzz target {want:?}: expected one of {:?}",
                TARGETS.iter().map(|t| t.0).collect::<Vec<_>>()
            );
            return ExitCode::from(2);
        }
    }
    for (name, _) in TARGETS.iter().filter(|(n, _)| wanted.is_empty() || wanted.iter().any(|w| w == n)) {
        let target_dir = dir.join(name);
        if let Err(e) = std::fs::create_dir_all(&target_dir) {
            eprintln!("cannot create {}: {e}", target_dir.display());
            return ExitCode::FAILURE;
        }
        let all = seeds(name);
        for seed in &all {
            let hash: String = Sha256::digest(seed).iter().take(8).map(|b| format!("{b:02x}")).collect();
            let path = target_dir.join(format!("seed-{hash}"));
            if let Err(e) = std::fs::write(&path, seed) {
                eprintln!("cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
        println!("{name}: {} seeds in {}", all.len(), target_dir.display());
    }
    ExitCode::SUCCESS
}
