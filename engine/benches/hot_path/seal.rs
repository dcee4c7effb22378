//! Group-key sealing: the AEAD candidates on this CPU (AES-256-GCM and
//! ChaCha20-Poly1305, both from `ring`), then the engine's sealer and opener (which
//! use the faster, AES-256-GCM) on datagram-sized buffers.

use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};
use ringcast::{Keyring, SEAL_OVERHEAD};

use crate::common::size;

/// A loopback-sized datagram, an Ethernet-sized one, a jumbo one.
const SIZES: [usize; 3] = [1472, 8192, 65_000];

pub fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("seal");
    for len in SIZES {
        g.throughput(Throughput::Bytes(len as u64));
        for (name, alg) in [
            ("aes256gcm", &AES_256_GCM),
            ("chacha20poly1305", &CHACHA20_POLY1305),
        ] {
            let key = LessSafeKey::new(UnboundKey::new(alg, &[7u8; 32]).expect("key"));
            let mut buf = vec![0x5au8; len];
            let mut counter = 0u64;
            g.bench_with_input(BenchmarkId::new(name, size(len)), &len, |b, _| {
                b.iter(|| {
                    counter += 1;
                    let mut n = [0u8; 12];
                    n[4..].copy_from_slice(&counter.to_le_bytes());
                    let tag = key.seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(n),
                        Aad::from(&[0u8; 52]),
                        black_box(&mut buf[..]),
                    );
                    let _ = black_box(tag.expect("seal"));
                })
            });
        }
        let keys = Keyring::generate().expect("key");
        let mut sealer = keys.sealer();
        let plain = {
            let mut p = vec![0x5au8; len];
            p[..4].copy_from_slice(b"RCST");
            p
        };
        let mut out = vec![0u8; len + SEAL_OVERHEAD];
        g.bench_with_input(
            BenchmarkId::new("ringcast_seal", size(len)),
            &len,
            |b, _| b.iter(|| black_box(sealer.seal(black_box(&plain), &mut out))),
        );
        // Open: each iteration opens a freshly sealed datagram (a replay would be
        // refused early); the sealing is set-up, outside the timing.
        let mut opener = keys.opener();
        g.bench_with_input(
            BenchmarkId::new("ringcast_open", size(len)),
            &len,
            |b, _| {
                b.iter_batched_ref(
                    || {
                        let mut o = vec![0u8; len + SEAL_OVERHEAD];
                        sealer.seal(&plain, &mut o);
                        o
                    },
                    // (a refused open would be timed as a fast one)
                    |sealed| assert!(black_box(opener.open(0, sealed)).is_ok()),
                    BatchSize::SmallInput,
                )
            },
        );
    }
    g.finish();
}
