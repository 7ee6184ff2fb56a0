//! The recording reader (`keysentry replay FILE`: a file anyone could
//! hand an operator) on arbitrary bytes: a parse or an error, never a
//! panic; every record it returns re-encodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor::agent::record::parse;

fuzz_target!(|data: &[u8]| {
    if let Ok((_, records)) = parse(data) {
        for r in &records {
            let _ = r.encode();
        }
    }
});
