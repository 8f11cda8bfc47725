//! Fuzz target `datagram`: the body is `cohort_actors::fuzzing::datagram` (its documentation says what the input
//! means and what is asserted); `actors/tests/fuzz_corpus.rs` replays the same function over the corpus.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cohort_actors::fuzzing::datagram(data));
