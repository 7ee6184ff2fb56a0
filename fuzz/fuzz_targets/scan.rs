//! The key scanner on arbitrary bytes: must not panic, must stay in its
//! memory bounds, and its findings must lie inside the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor::enrich::scan::{ScanLimits, scan_reader};

fuzz_target!(|data: &[u8]| {
    // Small windows so the overlap and lookback paths run on small inputs.
    let limits = ScanLimits {
        chunk: 1024,
        max_key: 1024,
        lookback: 256,
        max_findings: 64,
    };
    let report = scan_reader(data, &limits).expect("reading a slice cannot fail");
    assert_eq!(report.bytes, data.len() as u64);
    for f in &report.findings {
        assert!(f.offset + f.length <= data.len() as u64);
    }
    let whole = scan_reader(data, &ScanLimits::default()).expect("slice");
    assert_eq!(whole.bytes, data.len() as u64);
});
