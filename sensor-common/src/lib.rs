//! The contract between keysentry's kernel programs and its user-space agent.
//!
//! Every record is `#[repr(C)]`, has no implicit padding and no `bool`, and
//! starts with a [`Header`] whose `kind` tags it and whose `size` is the size
//! of the whole record. Each record's size is checked at compile time next
//! to it, and its kind is given by its type ([`Record`], [`SharedRecord`]).
//!
//! One module per record family, all re-exported here (`sensor_common::X`):
//! `header` (Header, EventKind, KPath, path limits), `process` (exec, fork,
//! exit, rename), `open` (OpenEvent, /proc files), `memory` (memory access,
//! dump signals and configuration), `flow` (taint, writes, sends, path
//! changes), `watch` (watched inodes), `lsm` (enforcement, allowlist, fd
//! hand-offs), `kernel` (offsets and settings handed to the programs);
//! `agent` (key-agent sockets); `names` is the key-name matcher both sides run; `x86_64` states the one
//! architecture keysentry supports and holds its syscall numbers. The
//! `user` feature adds the `aya::Pod` impls of the map keys and values.
#![no_std]

pub mod names;
pub mod x86_64;

mod agent;
mod flow;
mod fold;
mod header;
mod kernel;
mod keyring;
mod lsm;
mod memory;
mod open;
mod process;
mod watch;

pub use agent::*;
pub use flow::*;
pub use fold::*;
pub use header::*;
pub use kernel::*;
pub use keyring::*;
pub use lsm::*;
pub use memory::*;
pub use open::*;
pub use process::*;
pub use watch::*;

// SAFETY: repr(C), without padding, valid for any bits.
#[cfg(feature = "user")]
unsafe impl aya::Pod for names::NamePatterns {}
// SAFETY: repr(C), without padding, valid for any bits.
#[cfg(feature = "user")]
unsafe impl aya::Pod for FoldKey {}
// SAFETY: repr(C), without padding, valid for any bits.
#[cfg(feature = "user")]
unsafe impl aya::Pod for FoldVal {}
// SAFETY: repr(C), without padding, valid for any bits.
#[cfg(feature = "user")]
unsafe impl aya::Pod for CritBucket {}
// SAFETY: repr(C), without padding, valid for any bits.
#[cfg(feature = "user")]
unsafe impl aya::Pod for AgentSock {}
// SAFETY: repr(C), without padding, valid for any bits.
#[cfg(feature = "user")]
unsafe impl aya::Pod for names::NameKey {}
