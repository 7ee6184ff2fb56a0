pub mod dumpcfg;
pub mod flow;
pub mod memory;
pub mod open;
pub mod process;
pub mod signal;
