#![no_main]
//! Every wire decoder on one datagram; what decodes must encode back to the same bytes.
//! See `ringcast::fuzzing::decode`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ringcast::fuzzing::decode(data));
