//! The config loader on arbitrary text: a config or an error naming the
//! problem, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse(text, "fuzz");
    }
});
