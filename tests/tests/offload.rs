//! UDP GSO/GRO through nodes on loopback at Ethernet MTU (max payload 1472: loopback's
//! own MTU is 64 KiB), with each backend and each on/off mix: delivery stays
//! byte-exact and in order, and the counters show the offload path was taken.

use std::time::{Duration, Instant};

use ringcast::{Event, Node, OffloadStatus, PublishError};

use ringcast_e2e::{lo_config as config, LIB_BACKENDS as BACKENDS};

const N: u32 = 20_000;

/// Message `i`: 1,000 bytes, the index first, the rest derived from it.
fn message(i: u32) -> Vec<u8> {
    let mut m: Vec<u8> = (0..1000u32)
        .map(|j| (i.wrapping_mul(31) ^ j) as u8)
        .collect();
    m[..4].copy_from_slice(&i.to_le_bytes());
    m
}

fn run(test_id: u8, gso: bool, gro: bool) {
    for (backend, name) in BACKENDS {
        let what = format!("[{name} gso={gso} gro={gro}]");
        let node = |b: ringcast::ConfigBuilder| {
            Node::new(b.max_payload(1472).gso(gso).gro(gro).build().unwrap()).unwrap()
        };
        let rx = node(config(test_id, backend, name));
        let tx = node(config(test_id, backend, name));
        assert_eq!(tx.max_payload(), 1472);
        let mut sub = rx.subscriber(&["/gso"]).unwrap();
        let mut publ = tx.publisher("/gso/x").unwrap();
        let (mut sent, mut next) = (0u32, 0u32);
        let mut pending = message(0);
        let deadline = Instant::now() + Duration::from_secs(60);
        while next < N {
            assert!(Instant::now() < deadline, "{what} stuck at {next}");
            while sent < N {
                match publ.offer(&pending) {
                    Ok(()) => {
                        sent += 1;
                        pending = message(sent);
                    }
                    Err(PublishError::BackPressured) => break,
                    Err(e) => panic!("{what} {e}"),
                }
            }
            sub.poll_timeout(1024, Duration::from_millis(1), |ev| match ev {
                Event::Message(m) => {
                    assert_eq!(m.seq(), u64::from(next), "{what}");
                    assert_eq!(m.payload(), message(next).as_slice(), "{what}");
                    next += 1;
                }
                Event::Loss(l) => panic!("{what} loss {l:?}"),
                Event::Session(_) => {}
                _ => {}
            });
        }
        let t = tx.stats();
        let r = ringcast_e2e::settled(&rx, |r| r.messages_received >= u64::from(N));
        assert_eq!(r.messages_received, u64::from(N), "{what}");
        assert_eq!((r.truncated, r.malformed), (0, 0), "{what} {r:?}");
        let (to, ro) = (t.offload, r.offload);
        if gso {
            assert_eq!(to.gso, OffloadStatus::On, "{what} {to:?}");
            assert!(
                to.gso_sends > 0 && to.gso_segments >= 2 * to.gso_sends,
                "{what} GSO path not used: {to:?}"
            );
            assert_eq!(to.gso_downgrades, 0, "{what} {to:?}");
        } else {
            assert_eq!(to.gso, OffloadStatus::Disabled, "{what} {to:?}");
            assert_eq!(to.gso_sends, 0, "{what} {to:?}");
        }
        if gro {
            assert_eq!(ro.gro, OffloadStatus::On, "{what} {ro:?}");
        } else {
            assert_eq!(ro.gro, OffloadStatus::Disabled, "{what} {ro:?}");
        }
        if gso && gro {
            // On loopback a GSO send arrives at a GRO socket still coalesced.
            assert!(
                ro.gro_buffers > 0 && ro.gro_segments >= 2 * ro.gro_buffers,
                "{what} GRO path not used: {ro:?}"
            );
        } else {
            assert_eq!(ro.gro_buffers, 0, "{what} {ro:?}");
        }
        let names: Vec<&str> = r.fields().iter().map(|(n, _)| *n).collect();
        assert!(names.contains(&"gso_sends") && names.contains(&"gro_buffers"));
    }
}

#[test]
fn gso_and_gro_on() {
    run(60, true, true);
}

#[test]
fn gso_on_gro_off() {
    run(61, true, false);
}

#[test]
fn gso_off_gro_on() {
    run(62, false, true);
}

/// `Config::busy_poll` sets `SO_BUSY_POLL` on the receive socket (and io_uring NAPI
/// busy polling on the receive ring) and says so, or says why not; delivery is
/// unchanged. Off by default.
#[test]
fn busy_poll_is_set_or_reported() {
    use ringcast::BusyPoll;
    for (backend, name) in BACKENDS {
        let plain = Node::new(config(63, backend, name).build().unwrap()).unwrap();
        let _s = plain.subscriber(&["/bp"]).unwrap();
        let o = plain.stats().offload;
        assert_eq!(
            (o.busy_poll, o.napi_busy_poll),
            (BusyPoll::Off, BusyPoll::Off)
        );
        drop((_s, plain));

        let rx = Node::new(
            config(64, backend, name)
                .busy_poll(Some(Duration::from_micros(50)))
                .build()
                .unwrap(),
        )
        .unwrap();
        let tx = Node::new(config(64, backend, name).build().unwrap()).unwrap();
        let mut sub = rx.subscriber(&["/bp"]).unwrap();
        let o = rx.stats().offload;
        assert!(
            matches!(o.busy_poll, BusyPoll::On(50) | BusyPoll::Refused(50, _)),
            "[{name}] {o:?}"
        );
        if name == "mmsg" {
            assert_eq!(o.napi_busy_poll, BusyPoll::Off, "[{name}] {o:?}");
        } else {
            assert!(
                matches!(
                    o.napi_busy_poll,
                    BusyPoll::On(50) | BusyPoll::Refused(50, _)
                ),
                "[{name}] {o:?}"
            );
        }
        let mut publ = tx.publisher("/bp").unwrap();
        for i in 0..100u32 {
            publ.offer_blocking(&message(i), Duration::from_secs(5))
                .unwrap();
        }
        let mut next = 0u32;
        let deadline = Instant::now() + Duration::from_secs(10);
        while next < 100 && Instant::now() < deadline {
            sub.poll_timeout(64, Duration::from_millis(10), |ev| {
                if let Event::Message(m) = ev {
                    assert_eq!(m.payload(), message(next).as_slice(), "[{name}]");
                    next += 1;
                }
            });
        }
        assert_eq!(next, 100, "[{name}]");
    }
}
