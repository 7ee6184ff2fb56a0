//! The agent: the stages composed. `pipeline` takes one record through
//! decode, enrich, detect, correlate and output; `live` starts everything
//! and runs the event loop, `lanes` reads the three kernel rings into it; `replay` feeds a recording instead; `record`
//! is the recording's format and `recording` the pipeline's hooks into it;
//! `probes_report` is `keysentry probes`.

pub mod lanes;
pub mod live;
pub mod pipeline;
pub mod probes_report;
pub mod record;
pub mod recording;
pub mod replay;
pub mod watchdog;
