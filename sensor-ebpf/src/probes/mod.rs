pub mod dumpcfg;
pub mod flow;
pub mod lsm;
pub mod memory;
pub mod open;
pub mod process;
pub mod signal;
