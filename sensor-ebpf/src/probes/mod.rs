pub mod memory;
pub mod open;
pub mod process;
pub mod signal;
