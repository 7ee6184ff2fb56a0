//! Stage 3, enrich: the state every rule consults (`context::Context`),
//! the facts rules take (`facts`), and the reads of the live system they
//! rest on (`sysview`); the tracked-file registry (`track`) and its kernel
//! side (`tracking`); the key-material scanner (`scan/`) and the key book
//! of the host's key fingerprints it fills (`keybook`); path arguments
//! resolved as their process saw them (`userpath`); the files key holders
//! run, read from their mappings (`holder_code`); the cgroup, unit and
//! container a process runs in (`cgroups`); tracked files read from their
//! writer's root (`roots`).

pub mod agents;
pub mod cgroups;
pub mod context;
pub mod coredump;
pub mod corepattern;
pub mod devnum;
pub mod exeid;
pub mod facts;
pub mod handle;
pub mod holder_code;
pub mod holders_at_start;
pub mod keybook;
pub mod nskeys;
pub mod proctab;
pub mod protect;
pub mod rawdev;
pub mod rootfiles;
pub mod roots;
pub mod runtimes;
pub mod scan;
pub mod sysview;
pub mod track;
pub mod tracking;
pub mod userpath;
pub mod watch;
