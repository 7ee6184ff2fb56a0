pub mod dumpcfg;
pub mod flow;
pub mod lsm;
pub mod lsm_detect;
pub mod memory;
pub mod open;
pub mod process;
pub mod signal;
