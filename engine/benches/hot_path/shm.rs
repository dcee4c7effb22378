//! The shared-memory log (`ringcast::shm`, the storage of the IPC transport), driven
//! from one thread: `offer` of one record then `poll` of it, by a back-pressuring
//! reader (lent in place) and by a lapping one (copy + seqlock check). The cost of
//! the log's own instructions, without the cross-core cache traffic of two processes.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use ringcast::shm::{LogEvent, LogReader, LogWriter, MIN_CAPACITY};

use crate::common::size;

pub fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("shm");
    let dir = std::env::temp_dir().join(format!("ringcast-bench-shm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for len in [64usize, 1024] {
        for (name, back_pressure) in [("offer_poll_lent", true), ("offer_poll_copied", false)] {
            let payload = vec![0x3cu8; len];
            let mut w =
                LogWriter::create(&dir, name, 16 * MIN_CAPACITY, 1, 0, u64::MAX).expect("log");
            let mut r = LogReader::open(w.path(), back_pressure, 0).expect("reader");
            assert_eq!(r.back_pressures(), back_pressure);
            let (mut offered, mut read) = (0u64, 0u64);
            g.throughput(Throughput::Elements(1));
            g.bench_function(BenchmarkId::new(name, size(len)), |b| {
                b.iter(|| {
                    if w.offer(black_box(&payload)).is_ok() {
                        offered += 1;
                    }
                    r.poll(1, 0, u64::MAX, &mut |e| {
                        if let LogEvent::Message { payload, .. } = e {
                            read += u64::from(black_box(payload)[len - 1] != 0);
                        }
                    });
                })
            });
            // (nothing ran when a filter left this benchmark out)
            assert_eq!(offered, read, "every record offered was read, none lost");
        }
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}
