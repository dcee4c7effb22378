//! Micro-benchmarks of the engine's hot-path pieces, one module per piece. See
//! `engine/benches/README.md` for what each measures; run with `cargo bench -p ringcast`.
//!
//! They reach the engine's private internals through `ringcast::__bench`, which is not
//! part of the API.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};

mod common;
mod receiver;
mod ring;
mod seal;
mod sender;
mod shm;
mod topic;
mod wire;

/// Short measurements so a whole `cargo bench -p ringcast` stays within two minutes;
/// command-line flags (`--measurement-time`, `--sample-size`, ...) still override.
fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(30)
}

criterion_group! {
    name = hot_path;
    config = config();
    targets = wire::bench, ring::bench, receiver::bench, sender::bench, topic::bench, seal::bench, shm::bench
}
criterion_main!(hot_path);
