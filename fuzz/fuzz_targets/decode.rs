//! The ring-record decoder on arbitrary bytes (what a kernel bug or a
//! corrupted buffer could hand user space): it must return a record or an
//! error, never panic or read out of bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor::ingest::decode::decode;

fuzz_target!(|data: &[u8]| {
    let _ = decode(data);
});
