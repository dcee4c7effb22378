#![no_main]
//! The sealed-datagram opener: forged, mutated, truncated, replayed and real sealed
//! datagrams, with what each must give asserted. See `ringcast::fuzzing::seal`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ringcast::fuzzing::seal(data));
