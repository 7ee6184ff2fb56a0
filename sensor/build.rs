//! Embeds the eBPF object built by `cargo xtask build-ebpf`.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=KEYSENTRY_EBPF_OBJ");
    let obj = match std::env::var_os("KEYSENTRY_EBPF_OBJ") {
        Some(p) => PathBuf::from(p),
        None => {
            let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
            manifest.join("../target/ebpf/bpfel-unknown-none/release/sensor-ebpf")
        }
    };
    if !obj.exists() {
        panic!(
            "eBPF object {} not found: build it with `cargo xtask build-ebpf` (or `cargo xtask build`)",
            obj.display()
        );
    }
    let obj = obj.canonicalize().expect("canonicalize eBPF object path");
    println!("cargo:rerun-if-changed={}", obj.display());
    println!("cargo:rustc-env=KEYSENTRY_EBPF_OBJ={}", obj.display());
}
