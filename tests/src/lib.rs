//! Integration tests live in `tests/`; `src/bin/ks-actor.rs` is the program
//! they run to cause kernel events.
