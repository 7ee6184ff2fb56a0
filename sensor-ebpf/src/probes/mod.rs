//! The programs, one module per hook family.

pub mod agent;
pub mod bench;
pub mod close;
pub mod dumpcfg;
pub mod flow;
pub mod keyring;
pub mod kreader;
pub mod lsm;
pub mod lsm_detect;
pub mod memory;
pub mod open;
pub mod open_arg;
pub mod open_proc;
pub mod open_raw;
pub mod open_rules;
pub mod process;
pub mod signal;
pub mod sysctl;
pub mod verdict;
