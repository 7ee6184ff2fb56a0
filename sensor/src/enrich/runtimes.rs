//! A container's name and image, read from its runtime's own state: the
//! cgroup path names the runtime and the container's id
//! (`enrich/cgroups.rs`); the runtime's state says what its operator
//! called it and which image it runs. Alerts carry both
//! (`process.container`), and `[[protected]]` and `[[allow]]` select by
//! them (docs/containers.md).
//!
//! | runtime | state read |
//! |---|---|
//! | docker | `<docker_root>/containers/<id>/config.v2.json`: `Name`, `Config.Image` |
//! | podman | `<podman_root>/<driver>-containers/containers.json`: `names`, `metadata` `image-name` |
//! | containerd (Kubernetes) | `/run/containerd/io.containerd.runtime.v2.task/k8s.io/<id>/config.json`: the CRI annotations |
//! | cri-o | `/run/containers/storage/overlay-containers/<id>/userdata/config.json`: the CRI annotations |
//! | lxc | the name is the cgroup's |
//!
//! Only root's state is read: a file must be a regular file owned and
//! writable by root alone, opened without following a symlink
//! (`rootfiles::read_root_file`). A rootless container (its cgroup under
//! a `user@<uid>.service`) is named by its user's own state, which its
//! user can write: it gets no name or image, so no selector matches it.
//! Answers are kept per container (`KEEP_NS`; a miss is asked again
//! after `RETRY_NS`: a runtime may write its state after the first
//! process starts).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use serde::{Deserialize, Serialize};

use crate::{alert::ContainerCtx, config::Containers};

/// Largest state file read (a podman containers.json lists every
/// container on the host).
const MAX_STATE: u64 = 16 << 20;
/// Containers remembered (the map is emptied when full).
const MAX_KNOWN: usize = 4096;
/// How long a name is kept (`docker rename`).
const KEEP_NS: u128 = 60_000_000_000;
/// How soon a container without a name is asked again.
const RETRY_NS: u128 = 2_000_000_000;

const CONTAINERD_K8S: &str = "/run/containerd/io.containerd.runtime.v2.task/k8s.io";
const CRIO_RUN: &str = "/run/containers/storage/overlay-containers";

/// What the runtime's state says about a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Named {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Kubernetes: "namespace/pod".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

/// The runtimes' state directories and what was read from them.
pub struct Runtimes {
    docker_root: PathBuf,
    podman_root: PathBuf,
    known: HashMap<String, (Option<Arc<Named>>, Instant)>,
}

impl Default for Runtimes {
    fn default() -> Self {
        Self::new(&Containers::default())
    }
}

impl Runtimes {
    pub fn new(cfg: &Containers) -> Self {
        Self {
            docker_root: cfg.docker_root.clone(),
            podman_root: cfg.podman_root.clone(),
            known: HashMap::new(),
        }
    }

    /// The name and image of container `c` (of cgroup path `cgroup`),
    /// through `view` (`read` is what a live sensor does; a replay answers
    /// from the recording's `container:<id>` facts).
    pub fn named(
        &mut self,
        c: &ContainerCtx,
        cgroup: &str,
        view: &mut crate::enrich::sysview::SystemView,
    ) -> Option<Arc<Named>> {
        if rootless(cgroup) {
            return None;
        }
        if let Some((n, at)) = self.known.get(&c.id) {
            let age = at.elapsed().as_nanos();
            if (n.is_some() && age < KEEP_NS) || (n.is_none() && age < RETRY_NS) {
                return n.clone();
            }
        }
        if self.known.len() >= MAX_KNOWN {
            self.known.clear();
        }
        let (docker, podman) = (&self.docker_root, &self.podman_root);
        let v = view.found(format!("container:{}", c.id), || {
            read(docker, podman, c)
                .and_then(|n| serde_json::to_value(n).ok())
                .unwrap_or_default()
        });
        let n = serde_json::from_value::<Named>(v).ok().map(Arc::new);
        self.known.insert(c.id.clone(), (n.clone(), Instant::now()));
        n
    }
}

/// A cgroup a user's own systemd manager delegates (rootless containers).
pub fn rootless(cgroup: &str) -> bool {
    cgroup
        .split('/')
        .any(|s| s.starts_with("user@") && s.ends_with(".service"))
}

/// Reads the runtime's state for `c`.
fn read(docker_root: &Path, podman_root: &Path, c: &ContainerCtx) -> Option<Named> {
    match c.runtime {
        "docker" => docker(
            &docker_root
                .join("containers")
                .join(&c.id)
                .join("config.v2.json"),
        ),
        "podman" => podman(podman_root, &c.id),
        "containerd" => cri(&Path::new(CONTAINERD_K8S).join(&c.id).join("config.json")),
        "cri-o" => cri(&Path::new(CRIO_RUN).join(&c.id).join("userdata/config.json")),
        "lxc" => Some(Named {
            name: Some(c.id.clone()),
            ..Default::default()
        }),
        _ => None,
    }
}

fn json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    let bytes = crate::enrich::rootfiles::read_root_file(path, MAX_STATE)
        .map_err(|e| tracing::debug!("container state: {e:#}"))
        .ok()?;
    serde_json::from_slice(&bytes)
        .map_err(|e| tracing::debug!("container state {}: {e}", path.display()))
        .ok()
}

/// Docker's `config.v2.json`: `"Name": "/vault"`, `"Config": {"Image":
/// "hashicorp/vault:1.15"}` (the reference the container was run with).
fn docker(path: &Path) -> Option<Named> {
    #[derive(Deserialize)]
    struct Cfg {
        #[serde(rename = "Image", default)]
        image: String,
    }
    #[derive(Deserialize)]
    struct State {
        #[serde(rename = "Name", default)]
        name: String,
        #[serde(rename = "Config")]
        config: Option<Cfg>,
    }
    let s: State = json(path)?;
    Some(Named {
        name: some(s.name.trim_start_matches('/')),
        image: s.config.and_then(|c| some(&c.image)),
        pod: None,
    })
}

/// Podman's containers.json (containers/storage): each container's
/// `names`, and in `metadata` (a JSON string) `image-name`.
fn podman(root: &Path, id: &str) -> Option<Named> {
    #[derive(Deserialize)]
    struct Entry {
        id: String,
        #[serde(default)]
        names: Vec<String>,
        #[serde(default)]
        metadata: String,
    }
    #[derive(Deserialize)]
    struct Meta {
        #[serde(rename = "image-name", default)]
        image: String,
        #[serde(default)]
        name: String,
    }
    let dirs = std::fs::read_dir(root).ok()?;
    for d in dirs.flatten() {
        let f = d.file_name();
        let Some(driver) = f.to_str() else { continue };
        if !driver.ends_with("-containers") {
            continue;
        }
        let Some(list) = json::<Vec<Entry>>(&d.path().join("containers.json")) else {
            continue;
        };
        if let Some(e) = list.into_iter().find(|e| e.id == id) {
            let meta: Option<Meta> = serde_json::from_str(&e.metadata).ok();
            let name = e
                .names
                .first()
                .cloned()
                .or_else(|| meta.as_ref().map(|m| m.name.clone()));
            return Some(Named {
                name: name.as_deref().and_then(some),
                image: meta.and_then(|m| some(&m.image)),
                pod: None,
            });
        }
    }
    None
}

/// An OCI bundle's config.json with the CRI's annotations (containerd's
/// and cri-o's names for them).
fn cri(path: &Path) -> Option<Named> {
    #[derive(Deserialize)]
    struct Spec {
        #[serde(default)]
        annotations: HashMap<String, String>,
    }
    let s: Spec = json(path)?;
    let a = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| s.annotations.get(*k))
            .and_then(|v| some(v))
    };
    let ns = a(&[
        "io.kubernetes.cri.sandbox-namespace",
        "io.kubernetes.pod.namespace",
    ]);
    let pod = a(&["io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name"]);
    Some(Named {
        name: a(&[
            "io.kubernetes.cri.container-name",
            "io.kubernetes.container.name",
        ]),
        image: a(&[
            "io.kubernetes.cri.image-name",
            "io.kubernetes.cri-o.ImageName",
        ]),
        pod: match (ns, pod) {
            (Some(n), Some(p)) => Some(format!("{n}/{p}")),
            (None, p) => p,
            (Some(_), None) => None,
        },
    })
    .filter(|n| n.name.is_some() || n.image.is_some())
}

fn some(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// Does the image reference `image` (as the runtime recorded it) match the
/// selector `want`? Docker's short forms are the same image
/// (`vault` = `docker.io/library/vault`); a selector without a tag or
/// digest matches every tag and digest of that repository.
pub fn image_matches(want: &str, image: &str) -> bool {
    let (w_repo, w_ref) = split_ref(want);
    let (i_repo, i_ref) = split_ref(image);
    normal_repo(w_repo) == normal_repo(i_repo) && (w_ref.is_none() || w_ref == i_ref)
}

/// "repo[:tag][@digest]" -> (repo, the tag or digest part).
fn split_ref(s: &str) -> (&str, Option<&str>) {
    if let Some(at) = s.find('@') {
        return (&s[..at], Some(&s[at..]));
    }
    // A ':' after the last '/' is a tag (before it, a registry's port).
    let last = s.rfind('/').map_or(0, |i| i + 1);
    match s[last..].rfind(':') {
        Some(c) => (&s[..last + c], Some(&s[last + c + 1..])),
        None => (s, None),
    }
}

fn normal_repo(repo: &str) -> String {
    let r = repo
        .strip_prefix("docker.io/")
        .or_else(|| repo.strip_prefix("index.docker.io/"))
        .unwrap_or(repo);
    r.strip_prefix("library/").unwrap_or(r).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_in_their_short_and_long_forms() {
        assert!(image_matches("vault", "docker.io/library/vault:1.15"));
        assert!(image_matches("hashicorp/vault", "hashicorp/vault:1.15"));
        assert!(image_matches(
            "hashicorp/vault:1.15",
            "docker.io/hashicorp/vault:1.15"
        ));
        assert!(!image_matches(
            "hashicorp/vault:1.14",
            "hashicorp/vault:1.15"
        ));
        assert!(!image_matches("vault", "hashicorp/vault:1.15"));
        assert!(image_matches("reg:5000/ca", "reg:5000/ca:2"));
        assert!(!image_matches("reg:5000/ca", "reg:5001/ca:2"));
        assert!(image_matches("ca@sha256:ab", "ca@sha256:ab"));
        assert!(image_matches("localhost/ks:1", "localhost/ks:1"));
        assert!(!image_matches("ks", "localhost/ks:1"));
    }

    #[test]
    fn a_user_delegated_cgroup_is_rootless() {
        assert!(rootless(
            "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-x.scope"
        ));
        assert!(!rootless("/system.slice/docker-x.scope"));
    }

    #[test]
    fn each_runtimes_state_names_its_container() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("config.v2.json");
        std::fs::write(
            &f,
            r#"{"Name":"/vault","Config":{"Image":"hashicorp/vault:1.15"}}"#,
        )
        .unwrap();
        let n = docker(&f).unwrap();
        assert_eq!(
            (n.name.as_deref(), n.image.as_deref()),
            (Some("vault"), Some("hashicorp/vault:1.15"))
        );

        let p = dir.path().join("overlay-containers");
        std::fs::create_dir(&p).unwrap();
        std::fs::write(
            p.join("containers.json"),
            r#"[{"id":"aa","names":["other"]},{"id":"bb","names":["ca"],"image":"123",
               "metadata":"{\"image-name\":\"localhost/ks:1\",\"name\":\"ca\"}"}]"#,
        )
        .unwrap();
        let n = podman(dir.path(), "bb").unwrap();
        assert_eq!(
            (n.name.as_deref(), n.image.as_deref()),
            (Some("ca"), Some("localhost/ks:1"))
        );
        assert_eq!(podman(dir.path(), "cc"), None);

        let c = dir.path().join("config.json");
        std::fs::write(
            &c,
            r#"{"ociVersion":"1.0.2","annotations":{"io.kubernetes.cri.container-name":"vault",
               "io.kubernetes.cri.image-name":"hashicorp/vault:1.15",
               "io.kubernetes.cri.sandbox-name":"vault-0","io.kubernetes.cri.sandbox-namespace":"sec"}}"#,
        )
        .unwrap();
        let n = cri(&c).unwrap();
        assert_eq!(n.pod.as_deref(), Some("sec/vault-0"));
        assert_eq!(n.name.as_deref(), Some("vault"));
        std::fs::write(&c, r#"{"annotations":{}}"#).unwrap();
        assert_eq!(cri(&c), None);
    }
}
