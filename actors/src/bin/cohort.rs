//! The `cohort` command: a thin entry point; everything is in `cohort_actors::cli`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    cohort_actors::cli::main_entry()
}
