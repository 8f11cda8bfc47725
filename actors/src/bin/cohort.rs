//! The `cohort` command: a thin entry point; everything is in `cohort_actors::cli`.
fn main() {}
