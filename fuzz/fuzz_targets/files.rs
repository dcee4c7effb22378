#![no_main]
//! Recordings and IPC log headers read from files the input fills.
//! See `ringcast::fuzzing::files`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ringcast::fuzzing::files(data));
