//! Group-key sealing: the AEAD candidates on this CPU (AES-256-GCM and
//! ChaCha20-Poly1305, from `aws-lc-rs`, which the engine uses, and from `ring`), then
//! the engine's sealer and opener (AES-256-GCM from `aws-lc-rs`, the fastest here) on
//! datagram-sized buffers.

use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};
use ringcast::{Keyring, SEAL_OVERHEAD};

use crate::common::size;

/// A loopback-sized datagram, an Ethernet-sized one, a jumbo one.
const SIZES: [usize; 3] = [1472, 8192, 65_000];

/// Times `seal_in_place_separate_tag` of one AEAD crate (both have ring's API) on
/// `len`-byte buffers, with AES-256-GCM and ChaCha20-Poly1305.
macro_rules! raw_aead {
    ($fn_name:ident, $krate:ident, $prefix:literal) => {
        fn $fn_name(
            g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
            len: usize,
        ) {
            use $krate::aead::{
                Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305,
            };
            for (name, alg) in [
                (concat!($prefix, "aes256gcm"), &AES_256_GCM),
                (concat!($prefix, "chacha20poly1305"), &CHACHA20_POLY1305),
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
        }
    };
}
raw_aead!(awslc, aws_lc_rs, "awslc_");
raw_aead!(ring, ring, "ring_");

pub fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("seal");
    for len in SIZES {
        g.throughput(Throughput::Bytes(len as u64));
        awslc(&mut g, len);
        ring(&mut g, len);
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
        let mut plain_out = vec![0u8; len];
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
                    // Out of place, as the agents open (the receive buffer stays as it
                    // is). A refused open would be timed as a fast one.
                    |sealed| assert!(black_box(opener.open_into(0, sealed, &mut plain_out)).is_ok()),
                    BatchSize::SmallInput,
                )
            },
        );
    }
    g.finish();
}
