//! The wire codec: datagram header encode/decode, frame encode, and validated decoding of
//! a whole datagram (header + every frame checked, then iterated).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use ringcast::__bench::{encode_frame, Frames, Header, Kind, HEADER_LEN};

use crate::common::{case, packed, size, MAX_PAYLOAD, MTU_PAYLOAD, SESSION, TOPIC};

pub fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Elements(1));

    let header = Header {
        kind: Kind::Data,
        session: SESSION,
        network: 0,
        count: 18,
        seq: 123_456,
        msg_seq: 2_222_208,
    };
    let mut head = [0u8; HEADER_LEN];
    g.bench_function("header_encode", |b| {
        b.iter(|| black_box(&header).encode(black_box(&mut head)))
    });
    header.encode(&mut head);
    g.bench_function("header_decode", |b| {
        b.iter(|| Header::decode(black_box(&head[..])))
    });
    assert_eq!(Header::decode(&head), Ok(header));

    let mut out = vec![0u8; MTU_PAYLOAD];
    for len in [64usize, 1024] {
        let payload = vec![0x5au8; len];
        g.bench_with_input(
            BenchmarkId::new("encode_frame", size(len)),
            &payload,
            |b, p| {
                b.iter(|| encode_frame(black_box(&mut out), black_box(TOPIC), black_box(p), None))
            },
        );
        assert_eq!(
            encode_frame(&mut out, TOPIC, &payload, None),
            Some(8 + TOPIC.len() + len)
        );
    }

    for (max, len, limit) in [
        (MTU_PAYLOAD, 64, 1),
        (MTU_PAYLOAD, 64, usize::MAX),
        (MAX_PAYLOAD, 64, usize::MAX),
        (MAX_PAYLOAD, 1024, usize::MAX),
    ] {
        let (dg, n) = packed(max, len, limit);
        g.throughput(Throughput::Elements(n));
        let id = BenchmarkId::new("decode_iterate", case(n, len, max));
        g.bench_with_input(id, &dg, |b, dg| {
            b.iter(|| {
                let (h, frames) = Frames::decode(black_box(dg), 4 << 20).ok()?;
                let bytes: usize = frames.map(|f| f.payload.len() + f.topic.len()).sum();
                Some((h.count, bytes))
            })
        });
        let (h, frames) = Frames::decode(&dg, 4 << 20).expect("valid datagram");
        assert_eq!((u64::from(h.count), frames.count() as u64), (n, n));
    }
    g.finish();
}
