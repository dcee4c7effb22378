//! Publisher packing: `SenderStream::append` of whole messages into a reused
//! `DatagramBuf`, then `seal` (header, sequence number) and `clear`, per datagram.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use ringcast::__bench::{Append, DatagramBuf, Frames, SenderStream};

use crate::common::{case, packed, MAX_PAYLOAD, MTU_PAYLOAD, SESSION, TOPIC};

pub fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("sender");
    for (max, len, limit) in [
        (MTU_PAYLOAD, 64, 1),
        (MTU_PAYLOAD, 1024, 1),
        (MTU_PAYLOAD, 64, usize::MAX),
        (MAX_PAYLOAD, 64, usize::MAX),
        (MAX_PAYLOAD, 1024, usize::MAX),
    ] {
        // How many fit, as the engine's own packing decides.
        let (_, n) = packed(max, len, limit);
        let payload = vec![0x77u8; len];
        let mut s = SenderStream::new(SESSION, max);
        let mut d = DatagramBuf::new(max);
        let mut refused = 0u64;
        g.throughput(Throughput::Elements(n));
        g.bench_function(BenchmarkId::new("append_seal", case(n, len, max)), |b| {
            b.iter(|| {
                d.clear();
                for _ in 0..n {
                    if s.append(&mut d, black_box(TOPIC), black_box(&payload)) != Append::Done {
                        refused += 1;
                    }
                }
                s.seal(&mut d);
                black_box(d.bytes().len())
            })
        });
        assert_eq!(refused, 0, "every append fitted");
        if d.seq().is_none() {
            continue; // a name filter skipped this case: nothing was packed to check
        }
        let (h, frames) = Frames::decode(d.bytes(), 4 << 20).expect("valid datagram");
        assert_eq!((u64::from(h.count), frames.count() as u64), (n, n));
        assert_eq!(Some(h.seq), d.seq());
        assert_eq!(s.next_seq(), h.seq + 1);
    }
    g.finish();
}
