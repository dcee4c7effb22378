//! The receiver state machine's cost per datagram and per message: `handle_datagram` on
//! in-order data datagrams of one session (decode, session lookup, sequence checks,
//! delivery to the callback). Each iteration rewrites the 32-byte header with the next
//! sequence numbers (a few ns, included) so every datagram is new, never a duplicate.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput};
use ringcast::__bench::{Delivery, Header, Kind, Receiver, ReceiverConfig, HEADER_LEN};

use crate::common::{case, packed, MAX_PAYLOAD, MTU_PAYLOAD, SESSION};

pub fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("receiver");
    let source = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 40_000);
    for (max, len, limit) in [
        (MTU_PAYLOAD, 64, 1),
        (MTU_PAYLOAD, 1024, 1),
        (MTU_PAYLOAD, 64, usize::MAX),
        (MAX_PAYLOAD, 64, usize::MAX),
        (MAX_PAYLOAD, 1024, usize::MAX),
    ] {
        let (mut dg, n) = packed(max, len, limit);
        let mut rx = Receiver::new(ReceiverConfig::default());
        let now = Instant::now();
        let mut seq = 0u64;
        let mut delivered = 0u64;
        g.throughput(Throughput::Elements(n));
        g.bench_function(
            BenchmarkId::new("handle_datagram", case(n, len, max)),
            |b| {
                b.iter(|| {
                    let header = Header {
                        kind: Kind::Data,
                        session: SESSION,
                        network: 0,
                        count: n as u16,
                        seq,
                        msg_seq: seq * n,
                    };
                    if let Some(head) = dg.first_chunk_mut::<HEADER_LEN>() {
                        header.encode(head);
                    }
                    seq += 1;
                    let r = rx.handle_datagram(now, source, black_box(&dg), &mut |d| {
                        if let Delivery::Message { payload, .. } = d {
                            delivered += black_box(payload).len() as u64;
                        }
                    });
                    black_box(r)
                })
            },
        );
        // It measured the in-order path: every message delivered, nothing else.
        let k = rx.counters();
        assert_eq!((k.datagrams, k.messages), (seq, seq * n));
        assert_eq!((k.duplicates, k.malformed, k.gaps), (0, 0, 0));
        assert_eq!(delivered, seq * n * len as u64);
    }
    g.finish();
}
