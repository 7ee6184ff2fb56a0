//! keysentry's user-space agent. Stages, in the order an event flows:
//! `loader` (load + attach) -> `live` (ring buffer, event loop; `replay`
//! feeds a recording instead) -> `pipeline` (dispatch, `emit`) -> `decode`
//! -> `proctab` (enrich) -> `detect` and `detect_*` (rules) -> `score` /
//! `correlate` -> `alert` / `metrics` (outputs). `config`, `watch`,
//! `kernelmaps`, `btf` and `tracefs` prepare the kernel side;
//! `enforce` feeds the BPF LSM hooks and alerts their denials; `fdaccess`
//! alerts what the LSM hooks detect (key reads through a handed-over fd).

pub mod alert;
pub mod btf;
pub mod config;
pub mod context;
pub mod coredump;
pub mod correlate;
pub mod decode;
pub mod detect;
pub mod detect_dumps;
pub mod detect_keys;
pub mod detect_memory;
pub mod dumps;
pub mod enforce;
pub mod environ;
pub mod evidence;
pub mod facts;
pub mod fdaccess;
pub mod flows;
pub mod handle;
pub mod kernelmaps;
pub mod keyscan;
pub mod live;
pub mod loader;
pub mod metrics;
pub mod pipeline;
pub mod probes_report;
pub mod proctab;
pub mod protect;
pub mod record;
pub mod recording;
pub mod redact;
pub mod renames;
pub mod replay;
pub mod rules;
pub mod scan;
pub mod score;
pub mod sends;
pub mod sinks;
pub mod sysview;
pub mod tracefs;
pub mod track;
pub mod tracking;
pub mod watch;
