//! The command-line redactor on arbitrary arguments (NUL-separated): never
//! a panic, and idempotent (recordings store redacted command lines that a
//! replay redacts again).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor::redact::redact_argv;

fuzz_target!(|data: &[u8]| {
    let argv: Vec<String> = data
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let once = redact_argv(&argv);
    assert_eq!(once.len(), argv.len());
    assert_eq!(redact_argv(&once), once);
});
