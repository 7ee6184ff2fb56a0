//! Stage 2, ingest: ring-buffer records checked and decoded into owned
//! records (the ring itself is read by `agent::live`).

pub mod decode;
