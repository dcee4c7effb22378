//! Fuzz entry points (see `fuzz/`). Filled in by the fuzzing work.
