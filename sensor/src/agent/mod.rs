//! The agent: the stages composed. `pipeline` takes one record through
//! decode, enrich, detect, correlate and output; `live` starts everything
//! and runs the event loop, `reader` reads the three kernel rings on its
//! own thread into the bounded queue of `lanes`, which hands them to the
//! pipeline in event-time order; `reload` applies SIGHUP's config;
//! `folds` takes the counts of the repeats the kernel folded; `replay`
//! feeds a recording instead; `record`
//! is the recording's format and `recording` the pipeline's hooks into it;
//! `probes_report` is `keysentry probes`; `scoring` gives an alert its
//! score from the pipeline's context.

pub mod corehandler;
mod counters;
pub mod folds;
pub mod lanes;
pub mod live;
pub mod pipeline;
pub mod probes_report;
pub mod reader;
pub mod record;
pub mod recording;
pub mod reload;
pub mod replay;
pub mod scoring;
pub mod watchdog;
