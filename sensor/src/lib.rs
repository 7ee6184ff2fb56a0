//! keysentry's user-space agent, laid out by stage in the order an event
//! flows (docs/architecture.md follows the same order):
//!
//! - `kernel`: load and attach the programs (`loader/`), struct offsets
//!   from BTF (`btf`), tracefs, and `control`: the narrow interface through
//!   which user space changes the kernel maps while it runs.
//! - `ingest`: `decode/`, ring-buffer records to owned records.
//! - `enrich`: the shared `Context` (process table, protection, key paths
//!   watched, the tracked-file registry and its kernel side, `SystemView`
//!   for every read of the live system), the facts the rules take, and the
//!   key-material scanner.
//! - `detect`: the policy and one module per rule family.
//! - `correlate`: incidents and scoring.
//! - `output`: the sinks (stdout, file, syslog).
//! - `agent`: the composition: `pipeline` (one record through the stages),
//!   `live` (start-up and the event loop), `replay`, the recording.
//!
//! Shared by every stage and importing none: the alert schema (`alert`),
//! the rule table (`rules`), `config`, `metrics` and `redact`.

pub mod agent;
pub mod alert;
pub mod config;
pub mod correlate;
pub mod detect;
pub mod enrich;
pub mod ingest;
pub mod kernel;
pub mod metrics;
pub mod output;
pub mod redact;
pub mod rules;
