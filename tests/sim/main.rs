//! The deterministic simulation suite: many protocol cores on a simulated network, one seed per run.
//!
//! - `harness`: the simulator (network, disks, processes, fence agent, application clients, checks).
//! - `scenario`: scenarios as data (steps and conditions) and their runner; the seed story.
//! - `campaign`: random runs (a safety phase with random faults, then the liveness phase).
//! - `scenarios`: the hand-written scenarios, one test each.
//! - `random`: the random campaigns, the replay of `COHORT_SEED` and the 64-node scale run.
//!
//! Replay a failure exactly with the line it prints: `COHORT_SEED=<seed> cargo test --test sim -- <test>`.

mod campaign;
mod harness;
mod random;
mod scenario;
mod scenarios;
