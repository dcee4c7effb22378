//! What several benches share: a topic, and datagrams packed by the engine's own sender.

use ringcast::__bench::{Append, DatagramBuf, SenderStream};

/// The topic every benchmark message carries (8 bytes, like a short market-data topic).
pub const TOPIC: &str = "/md/EURO";
/// Session id of the benchmark publisher.
pub const SESSION: u32 = 0x5e55;
/// A datagram that fits an Ethernet MTU (1500 - 20 IP - 8 UDP).
pub const MTU_PAYLOAD: usize = 1472;
/// The largest UDP payload over IPv4 (what loopback allows).
pub const MAX_PAYLOAD: usize = 65507;

/// A sealed datagram of at most `max_payload` bytes holding `limit` messages of
/// `payload_len` bytes, or as many as fit if that is fewer; returns it and its count.
pub fn packed(max_payload: usize, payload_len: usize, limit: usize) -> (Vec<u8>, u64) {
    let mut s = SenderStream::new(SESSION, max_payload);
    let mut d = DatagramBuf::new(max_payload);
    let payload = vec![0xa5u8; payload_len];
    let mut n = 0u64;
    while (n as usize) < limit && s.append(&mut d, TOPIC, &payload) == Append::Done {
        n += 1;
    }
    assert!(
        n > 0,
        "a {payload_len}-byte message must fit {max_payload} bytes"
    );
    s.seal(&mut d);
    (d.bytes().to_vec(), n)
}

/// `64B`, `1KB`: a payload size as benchmark ids spell it.
pub fn size(payload_len: usize) -> String {
    if payload_len >= 1024 && payload_len % 1024 == 0 {
        format!("{}KB", payload_len / 1024)
    } else {
        format!("{payload_len}B")
    }
}

/// A benchmark id naming how many messages of what size a datagram of what size holds,
/// e.g. `18x64B_in_1472`.
pub fn case(count: u64, payload_len: usize, max_payload: usize) -> String {
    format!("{count}x{}_in_{max_payload}", size(payload_len))
}
