//! The SPSC byte ring between application threads and agents, driven from one thread:
//! the instruction cost of claim → fill → commit and peek → read → consume → release,
//! without the cross-core cache traffic two threads add.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use ringcast::__bench::byte_ring;

use crate::common::size;

/// Records per batch in the batched case.
const BATCH: usize = 64;

pub fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring");
    for len in [64usize, 1024] {
        let payload = vec![0x3cu8; len];
        let (mut p, mut r) = byte_ring(1 << 20);
        let mut read = 0u64;

        // One record at a time, released at once: a publisher's commit followed by the
        // agent's read when the ring is nearly always empty (the latency case).
        g.throughput(Throughput::Elements(1));
        g.bench_function(
            BenchmarkId::new("claim_commit_peek_release", size(len)),
            |b| {
                b.iter(|| {
                    if let Some(mut claim) = p.try_claim(len) {
                        claim.copy_from_slice(black_box(&payload));
                        claim.commit();
                    }
                    if let Some(rec) = r.peek() {
                        read += u64::from(black_box(rec)[len - 1]) | 1;
                        r.consume();
                    }
                    r.release();
                })
            },
        );
        // (nothing ran when a filter left this benchmark out)
        assert!(r.is_empty(), "every record written was read");
        let _ = read;

        // A burst of BATCH commits, then one read_batch (one release per batch).
        let mut records = 0u64;
        g.throughput(Throughput::Elements(BATCH as u64));
        g.bench_function(
            BenchmarkId::new("batch64_commit_then_read", size(len)),
            |b| {
                b.iter(|| {
                    for _ in 0..BATCH {
                        if let Some(mut claim) = p.try_claim(len) {
                            claim.copy_from_slice(black_box(&payload));
                            claim.commit();
                        }
                    }
                    records += r.read_batch(BATCH, |rec| {
                        black_box(rec);
                    }) as u64;
                })
            },
        );
        assert!(records % BATCH as u64 == 0 && r.is_empty());
    }
    g.finish();
}
