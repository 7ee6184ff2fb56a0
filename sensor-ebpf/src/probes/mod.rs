pub mod dumpcfg;
pub mod memory;
pub mod open;
pub mod process;
pub mod signal;
