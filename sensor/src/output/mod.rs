//! Stage 6, output: alerts and incidents to stdout, a file and syslog.

pub mod sinks;

pub use sinks::Outputs;
