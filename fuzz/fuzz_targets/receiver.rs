#![no_main]
//! A script of datagrams, clock steps, timeouts and polls driving one `Receiver`.
//! See `ringcast::fuzzing::receiver`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ringcast::fuzzing::receiver(data));
