#![no_main]
//! A script of offers, control messages, clock steps and transmits driving one `Publisher`
//! (its datagrams go through a lossy link to a `Receiver` whose feedback comes back).
//! See `ringcast::fuzzing::publisher`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ringcast::fuzzing::publisher(data));
