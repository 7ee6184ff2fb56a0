//! Stage 1, the kernel side: loading and attaching the programs, the
//! struct offsets they need, and the maps user space changes as it runs.

pub mod btf;
pub mod control;
pub mod loader;
pub mod lru;
pub mod mapstats;
pub mod pin;
pub mod tracefs;
