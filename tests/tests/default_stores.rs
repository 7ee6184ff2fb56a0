//! The default config's other key stores (issue 16): Kerberos credential
//! caches and Vault CLI tokens are keys by name wherever they are, and the
//! password-hash backups /etc/shadow- and /etc/gshadow- are key paths. Read
//! by root, a user's cache or token is a high alert; the user reading its
//! own is low; the shadow backup read by a program the config does not
//! allow is high.

mod common;

use std::{os::unix::fs::PermissionsExt, path::Path};

use common::*;

const RULE: &str = "key-file-open";
const USER: u32 = 65534;

#[test]
fn credential_caches_tokens_and_shadow_backups_are_keys() {
    require_root();
    let tmp = tempdir();
    let root = tmp.path().to_path_buf();
    let marker = keys_with_marker(&root);
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = root.join("home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(USER), Some(USER)).unwrap();
    let user_file = |name: &str| {
        let p = home.join(name);
        std::fs::write(&p, b"credentials\n").unwrap();
        std::os::unix::fs::chown(&p, Some(USER), Some(USER)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    };
    let ccache = user_file(&format!("krb5cc_{USER}"));
    let token = user_file(".vault-token");
    let body = format!(
        "{}\n[[key_path]]\npath = \"{}\"\n",
        default_config_body(),
        root.join("keys").display()
    );
    let mut s = Sensor::start(&root, &body);
    let (p_cc, st) = actor(&["open", ccache.to_str().unwrap()], None, None);
    assert!(st.success());
    let (p_tok, st) = actor(&["open", token.to_str().unwrap()], None, None);
    assert!(st.success());
    let (p_own, st) = actor(&["open", ccache.to_str().unwrap()], None, Some(USER));
    assert!(st.success());
    let backup = Path::new("/etc/shadow-");
    let p_backup = backup.exists().then(|| {
        let (p, st) = actor(&["open", "/etc/shadow-"], None, None);
        assert!(st.success());
        p
    });
    let alerts = s.alerts_until_marker(&marker);

    for (pid, what) in [(p_cc, "krb5cc"), (p_tok, ".vault-token")] {
        let a = one_by_pid(&alerts, RULE, pid);
        assert_eq!(a["severity"], "high", "{a:#}");
        assert!(
            a["open"]["key_name"].as_array().is_some_and(|n| n
                .iter()
                .any(|n| n.as_str().is_some_and(|n| n.contains(what)))),
            "{what}: {a:#}"
        );
    }
    let a = one_by_pid(&alerts, RULE, p_own);
    assert_eq!(a["severity"], "low", "the user's own cache: {a:#}");
    match p_backup {
        Some(p) => {
            let a = one_by_pid(&alerts, RULE, p);
            assert_eq!(a["severity"], "high", "{a:#}");
            assert_eq!(a["open"]["key_path"], "/etc/shadow-", "{a:#}");
        }
        None => println!("SKIPPED part: this host has no /etc/shadow-"),
    }
}

/// Removes what the SSSD test made.
struct Made(Vec<std::path::PathBuf>);

impl Drop for Made {
    fn drop(&mut self) {
        for p in self.0.iter().rev() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// SSSD's cache (`/var/lib/sss/db`: cached credentials) is a key store in
/// the default config: read by a program the config does not allow, it
/// is a high alert; read by sssd's back end, none; its memory cache (read
/// by every user lookup) is no key. The test makes the directories and a
/// copy of ks-actor at the back end's path, so it runs only where SSSD is
/// not installed (it never touches a real cache).
#[test]
fn sssd_cache_is_a_key_store_its_daemons_read() {
    require_root();
    let sss = Path::new("/var/lib/sss");
    let libexec = Path::new("/usr/libexec/sssd");
    if sss.exists() || libexec.exists() {
        println!("SKIPPED: SSSD is installed here; the test does not touch a real cache");
        return;
    }
    let mut made = Made(Vec::new());
    made.0.push(sss.to_path_buf());
    for d in ["db", "mc"] {
        std::fs::create_dir_all(sss.join(d)).unwrap();
    }
    let cache = sss.join("db/cache_ks.example.ldb");
    std::fs::write(&cache, b"cached credentials\n").unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mc = sss.join("mc/passwd");
    std::fs::write(&mc, b"memory cache\n").unwrap();
    if !Path::new("/usr/libexec").exists() {
        made.0.push("/usr/libexec".into());
    }
    std::fs::create_dir_all(libexec).unwrap();
    made.0.push(libexec.to_path_buf());
    let backend = libexec.join("sssd_be");
    std::fs::copy(actor_bin(), &backend).unwrap();
    std::fs::set_permissions(&backend, std::fs::Permissions::from_mode(0o755)).unwrap();

    let tmp = tempdir();
    let root = tmp.path().to_path_buf();
    let marker = keys_with_marker(&root);
    let body = format!(
        "{}\n[[key_path]]\npath = \"{}\"\n",
        default_config_body(),
        root.join("keys").display()
    );
    let mut s = Sensor::start(&root, &body);
    let (p_root, st) = actor(&["open", cache.to_str().unwrap()], None, None);
    assert!(st.success());
    let (p_mc, st) = actor(&["open", mc.to_str().unwrap()], None, None);
    assert!(st.success());
    let (p_be, st) =
        run_quiet(std::process::Command::new(&backend).args(["open", cache.to_str().unwrap()]));
    assert!(st.success());
    let alerts = s.alerts_until_marker(&marker);

    let a = one_by_pid(&alerts, RULE, p_root);
    assert_eq!(a["severity"], "high", "{a:#}");
    assert_eq!(a["open"]["key_path"], "/var/lib/sss/db", "{a:#}");
    none_by_pid(&alerts, RULE, p_be, "sssd's back end reading its cache");
    none_by_pid(&alerts, RULE, p_mc, "the memory cache every lookup reads");
}
