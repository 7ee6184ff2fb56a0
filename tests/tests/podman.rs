//! A real container (issue 17): podman, from the distribution, runs a
//! container from an image made here (busybox and ks-actor, imported
//! with `podman import`: no registry). keysentry protects the container's
//! processes by the name podman's state gives it, and a read of its pid 1
//! from inside the container (the namespace's own pid) is a high alert
//! naming the host pid, the container's name and its image. The same
//! read in another container of the same image is no high alert. An
//! `[[allow]] container_name` lets ks-actor (as the image has it) read a
//! key in that container only, and not with LD_PRELOAD set.
//!
//! SKIP where podman, runc or a static busybox is missing (the VMs):
//! `cargo xtask setup` installs them on the host.

mod common;

use std::{path::Path, process::Command};

use common::*;
use serde_json::Value;

/// `podman ARGS` with the settings this host needs: runc (crun refuses a
/// hybrid cgroup hierarchy), the caller's own open-file and process
/// limits (podman asks for more than root without CAP_SYS_RESOURCE may
/// set), no network. Its stdout, or a panic with its stderr.
fn podman(args: &[&str]) -> String {
    let o = Command::new("podman").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The `--ulimit`s for `podman run`: the test's own soft limits
/// (podman caps its own process limit at 32768).
fn ulimits() -> Vec<String> {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let get = |name: &str, cap: u64| {
        limits
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(cap, |v| v.min(cap))
    };
    let (nofile, nproc) = (get("Max open files", 1 << 20), get("Max processes", 32768));
    vec![
        format!("--ulimit=nofile={nofile}:{nofile}"),
        format!("--ulimit=nproc={nproc}:{nproc}"),
    ]
}

/// An image root: a static busybox, and ks-actor with the libraries it
/// loads (from `ldd`), at their paths.
fn rootfs(dir: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for d in ["proc", "sys", "dev", "etc", "tmp"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    for a in ["sh", "sleep", "cat"] {
        std::os::unix::fs::symlink("busybox", bin.join(a)).unwrap();
    }
    std::fs::copy(actor_bin(), bin.join("ks-actor")).unwrap();
    let ldd = Command::new("ldd").arg(actor_bin()).output().unwrap();
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let to = dir.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(lib, &to).unwrap();
    }
}

/// Containers and the image made for the test, removed on drop.
struct Made {
    containers: Vec<String>,
    image: String,
}

impl Drop for Made {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = Command::new("podman")
                .args(["rm", "-f", "-t", "0", c])
                .output();
        }
        let _ = Command::new("podman")
            .args(["rmi", "-f", &self.image])
            .output();
    }
}

/// The first mapped address of host process `pid` (hex, as ks-actor
/// takes it).
fn first_address(pid: &str) -> String {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let start = maps.split('-').next().unwrap();
    format!("0x{start}")
}

#[test]
fn a_podman_container_is_protected_and_named_by_its_runtimes_state() {
    require_root();
    for tool in ["podman", "runc", "ldd"] {
        if !have(tool) {
            println!(
                "SKIPPED: no {tool} (cargo xtask setup installs podman, runc and busybox-static)"
            );
            return;
        }
    }
    let ldd = Command::new("ldd").arg("/bin/busybox").output().unwrap();
    if !String::from_utf8_lossy(&ldd.stdout).contains("not a dynamic")
        && !String::from_utf8_lossy(&ldd.stderr).contains("not a dynamic")
    {
        println!("SKIPPED: no static /bin/busybox (busybox-static)");
        return;
    }
    let tmp = tempdir();
    let dir = tmp.path();
    let marker = keys_with_marker(dir);
    let me = std::process::id();
    let image = format!("localhost/ks-test-{me}:1");
    let (vault, web) = (format!("ks-vault-{me}"), format!("ks-web-{me}"));
    let mut made = Made {
        containers: Vec::new(),
        image: image.clone(),
    };
    let root = dir.join("rootfs");
    rootfs(&root);
    let tar = Command::new("tar")
        .args(["-C", root.to_str().unwrap(), "-cf", "-", "."])
        .output()
        .unwrap();
    assert!(tar.status.success());
    let tarball = dir.join("rootfs.tar");
    std::fs::write(&tarball, &tar.stdout).unwrap();
    podman(&["import", tarball.to_str().unwrap(), &image]);

    let keys = marker.parent().unwrap();
    std::fs::write(keys.join("host.pem"), b"a watched file").unwrap();
    // ks-actor, as the image has it, may open the keys in the web
    // container only.
    let mut s = Sensor::start(
        dir,
        &format!(
            "[[key_path]]\npath = \"{}\"\n\n[[protected]]\ncontainer_name = \"{vault}\"\n\n[[allow]]\nexe = \"/bin/ks-actor\"\ncontainer_name = \"{web}\"\n",
            keys.display()
        ),
    );
    let volume = format!("{}:/keys:ro", keys.display());
    // Two containers of the image, one of the protected name; their
    // execs (protection is decided there) are handled once the marker is
    // through.
    let mut hosts = Vec::new();
    for name in [&vault, &web] {
        let mut args = vec!["run", "-d", "--name", name, "--network", "none"];
        args.extend(["-v", &volume]);
        args.extend(["--runtime", "runc"]);
        let limits = ulimits();
        args.extend(limits.iter().map(String::as_str));
        args.extend([image.as_str(), "/bin/sleep", "600"]);
        let id = podman(&args);
        made.containers.push(name.clone());
        let pid = podman(&["inspect", "--format", "{{.State.Pid}}", name]);
        hosts.push((id, pid));
    }
    let _ = s.alerts_until_marker(&marker);
    // From inside each container, ks-actor reads its pid 1.
    for (name, (_, pid)) in [&vault, &web].into_iter().zip(&hosts) {
        let addr = first_address(pid);
        podman(&["exec", name, "/bin/ks-actor", "vm-read", "1", &addr, "16"]);
    }
    // The key (the host's, mounted) read in each; in the web container
    // once more with a loader variable.
    let open = ["/bin/ks-actor", "open", "/keys/host.pem"];
    for name in [&vault, &web] {
        podman(&[&["exec", name.as_str()][..], &open[..]].concat());
    }
    let preload = format!("LD_PRELOAD={}", libc_path());
    podman(
        &[
            &["exec", "-e", preload.as_str(), web.as_str()][..],
            &open[..],
        ]
        .concat(),
    );
    let alerts = s.alerts_until_marker(&marker);
    let reads = |pid: &str| -> Vec<&Value> {
        let pid: u64 = pid.parse().unwrap();
        alerts
            .iter()
            .filter(|a| a["rule"] == "process-vm-read" && a["target"]["pid"] == pid)
            .collect()
    };

    let (vault_id, vault_pid) = &hosts[0];
    let r = reads(vault_pid);
    assert_eq!(r.len(), 1, "{alerts:#?}");
    let a = r[0];
    assert_eq!(a["severity"], "high", "{a:#}");
    assert_eq!(
        a["target"]["protected"],
        format!("[[protected]] container_name = {vault}"),
        "{a:#}"
    );
    for who in [&a["target"]["container"], &a["process"]["container"]] {
        assert_eq!(who["runtime"], "podman", "{a:#}");
        assert_eq!(who["id"], vault_id.as_str(), "{a:#}");
        assert_eq!(who["name"], vault.as_str(), "{a:#}");
        assert_eq!(who["image"], image.as_str(), "{a:#}");
    }
    assert_eq!(a["process"]["comm"], "ks-actor", "{a:#}");

    // The other container's pid 1 is nobody's key holder.
    let (_, web_pid) = &hosts[1];
    let r = reads(web_pid);
    assert_eq!(r.len(), 1, "{alerts:#?}");
    let a = r[0];
    assert!(a["target"].get("protected").is_none(), "{a:#}");
    assert_eq!(a["severity"], "low", "{a:#}");
    assert_eq!(a["process"]["container"]["name"], web.as_str(), "{a:#}");

    // `[[allow]] container_name`: quiet in its container, an alert in
    // the other, and an alert with a loader variable.
    let key_opens = |name: &str| -> Vec<&Value> {
        alerts
            .iter()
            .filter(|a| a["rule"] == "key-file-open" && a["process"]["container"]["name"] == name)
            .collect()
    };
    let v = key_opens(&vault);
    assert_eq!(v.len(), 1, "{alerts:#?}");
    assert_eq!(v[0]["process"]["exe"], "/bin/ks-actor", "{:#}", v[0]);
    let w = key_opens(&web);
    assert_eq!(w.len(), 1, "only the preloaded open: {alerts:#?}");
    assert!(
        w[0]["process"]["allow_bypass"]
            .as_str()
            .is_some_and(|b| b.contains("LD_PRELOAD")),
        "{:#}",
        w[0]
    );
    drop(made);
    drop(s);
}
