//! The addresses of the peers a node knows, sent by unicast to a newcomer: how a seed
//! relays the directory where multicast does not reach.
//!
//! ```text
//! PeerList = header(kind 6, count = n, session 0, network, seq 0)
//!            | (ip [4] | port u16){n}
//! ```

use std::net::{Ipv4Addr, SocketAddrV4};

use super::{Header, Kind, WireError, HEADER_LEN};

/// Addresses in one peer list at most (fits an Ethernet MTU).
pub const MAX_PEER_LIST: usize = 200;
const ENTRY: usize = 6;

/// Encodes up to [`MAX_PEER_LIST`] of `peers` into `out` (cleared first); returns how
/// many went in.
pub fn encode_peer_list(network: u32, peers: &[SocketAddrV4], out: &mut Vec<u8>) -> usize {
    let n = peers.len().min(MAX_PEER_LIST);
    out.clear();
    let mut head = [0u8; HEADER_LEN];
    Header {
        kind: Kind::PeerList,
        count: n as u16,
        session: 0,
        network,
        seq: 0,
        msg_seq: 0,
    }
    .encode(&mut head);
    out.extend_from_slice(&head);
    for p in &peers[..n] {
        out.extend_from_slice(&p.ip().octets());
        out.extend_from_slice(&p.port().to_le_bytes());
    }
    n
}

/// Decodes a peer list: the count must match the bytes exactly and stay within
/// [`MAX_PEER_LIST`].
pub fn decode_peer_list(bytes: &[u8]) -> Result<Vec<SocketAddrV4>, WireError> {
    let h = Header::decode(bytes)?;
    if h.kind != Kind::PeerList {
        return Err(WireError::BadKind(h.kind as u8));
    }
    let body = &bytes[HEADER_LEN..];
    let n = h.count as usize;
    if n > MAX_PEER_LIST || body.len() != n * ENTRY {
        return Err(WireError::CountMismatch {
            declared: h.count,
            found: (body.len() / ENTRY).min(u16::MAX as usize) as u16,
        });
    }
    Ok(body
        .chunks_exact(ENTRY)
        .map(|e| {
            SocketAddrV4::new(
                Ipv4Addr::new(e[0], e[1], e[2], e[3]),
                u16::from_le_bytes([e[4], e[5]]),
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_cap_and_rejections() {
        let peers: Vec<SocketAddrV4> = (0..300u32)
            .map(|i| SocketAddrV4::new(Ipv4Addr::from(0x0a00_0000 + i), 40400))
            .collect();
        let mut b = Vec::new();
        assert_eq!(encode_peer_list(7, &peers[..3], &mut b), 3);
        assert_eq!(decode_peer_list(&b), Ok(peers[..3].to_vec()));
        assert_eq!(Header::decode(&b).unwrap().network, 7);
        assert_eq!(encode_peer_list(7, &peers, &mut b), MAX_PEER_LIST);
        assert!(b.len() <= 1400);
        assert_eq!(
            decode_peer_list(&b).unwrap(),
            peers[..MAX_PEER_LIST].to_vec()
        );
        for n in 0..b.len() {
            assert!(decode_peer_list(&b[..n]).is_err(), "cut at {n}");
        }
        b.push(0);
        assert!(decode_peer_list(&b).is_err(), "trailing byte");
    }
}
