//! The two key-name matchers agree: the one on strings
//! (`config::names::KeyName::matches`, `config::names::name_matches`) and
//! the one the kernel runs on name words (`sensor_common::names`, its table
//! compiled from the config by `reload::name_patterns`), on a shared table of
//! names.
//!
//! The kernel's loop itself (`eval_patterns` in sensor-ebpf/src/vfs.rs)
//! runs in a bpf_loop and cannot run here. What runs is
//! `NamePatterns::eval`, its user-space twin over the same shared pure
//! functions (`NamePattern::new`, `NamePattern::matches`, `name_key`),
//! with the name words built as the kernel builds them: 16 bytes read from
//! the name's start whatever follows its end, and its last 16 bytes when it
//! has 16 or more; the parent's name only when some pattern is a `dir`.
//! `eval_patterns` repeats `eval`'s include/exclude fold per pattern (five
//! lines): a change to one must be made to the other.

use sensor::{
    agent::reload::name_patterns,
    config::{Config, DEFAULT_CONFIG, names::name_matches},
};
use sensor_common::names::{NameKey, NamePatterns, name_key};

/// Rules at the edges of the kernel's words: affixes and exact names of
/// 16, 17 and 32 bytes, multibyte UTF-8, excludes of every form, `dir`
/// rules with excludes, one-byte patterns. 32 patterns, the most a table
/// holds.
const TRICKY: &str = r#"
[[key_name]]
prefix = "id_"
exclude = ["*.pub", "id_ID*", "id_exact"]
[[key_name]]
suffix = "_long_suffix.key"
[[key_name]]
prefix = "sixteen_byte_pre"
[[key_name]]
name = "exactly_16_bytes"
[[key_name]]
name = "exactly_17_bytes_"
[[key_name]]
name = "an_exact_name_of_thirty_two_byte"
[[key_name]]
suffix = ".clé"
[[key_name]]
prefix = "ключ"
exclude = ["*.pub"]
[[key_name]]
name = "秘密鍵.pem"
[[key_name]]
suffix = "鍵"
exclude = ["*ない鍵", "偽*"]
[[key_name]]
dir = "private-keys-v1.d"
exclude = ["*.lock", "README*", "pubring.kbx"]
[[key_name]]
dir = "キー"
[[key_name]]
dir = "a_directory_name_of_32_bytes_xyz"
exclude = ["*~"]
[[key_name]]
suffix = ".p12"
exclude = ["*sixteen_byte.p12", "sixteen_byte_pre*"]
[[key_name]]
name = "k"
[[key_name]]
suffix = "y"
exclude = ["y", "*_long_suffix.key"]
[[key_name]]
suffix = ".key"
exclude = ["*.pub.key"]
"#;

/// Two little-endian words of 16 bytes.
fn words(b: &[u8]) -> [u64; 2] {
    [
        u64::from_le_bytes(b[..8].try_into().unwrap()),
        u64::from_le_bytes(b[8..16].try_into().unwrap()),
    ]
}

/// The words the kernel builds for a name followed in memory by `stale`
/// bytes (inline dentry storage, the rest of a path argument).
fn kernel_key(name: &[u8], stale: &[u8; 16]) -> NameKey {
    let mut mem = name.to_vec();
    mem.extend_from_slice(stale);
    let head = words(&mem[..16]);
    let tail = if name.len() >= 16 {
        words(&mem[name.len() - 16..name.len()])
    } else {
        [0, 0]
    };
    name_key(head, tail, name.len() as u32)
}

/// The kernel's answer: a bit per rule.
fn kernel_rules(t: &NamePatterns, name: &str, parent: Option<&str>, stale: &[u8; 16]) -> u32 {
    let parent = match parent {
        Some(p) if t.has_dir != 0 => kernel_key(p.as_bytes(), stale),
        _ => NameKey::default(),
    };
    t.eval(&kernel_key(name.as_bytes(), stale), &parent)
}

/// The string matcher's answer: a bit per rule.
fn user_rules(cfg: &Config, name: &str, parent: Option<&str>) -> u32 {
    cfg.key_name
        .iter()
        .enumerate()
        .filter(|(_, k)| k.matches(name, parent))
        .fold(0, |bits, (i, _)| bits | 1 << i)
}

/// `s` cut to at most `n` bytes, at a character boundary.
fn cut(s: &str, n: usize) -> &str {
    let mut n = n.min(s.len());
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    &s[..n]
}

/// `s` with its last character dropped, and with its first dropped.
fn shorter(s: &str) -> [&str; 2] {
    let last = s.char_indices().last().map_or(0, |(i, _)| i);
    let first = s.chars().next().map_or(0, char::len_utf8);
    [&s[..last], &s[first..]]
}

/// Names around every pattern text of `cfg`, padded to lengths around
/// the kernel's 8, 16 and 32-byte word edges, plus fixed ones.
fn names(cfg: &Config) -> Vec<String> {
    let fills = ["", "a", "é", "ab", "鍵", "0123456"];
    let mut texts: Vec<String> = Vec::new();
    // Names an include matches and one of its excludes drops (or not).
    let mut both: Vec<String> = Vec::new();
    for k in &cfg.key_name {
        let include = k.include().text().to_string();
        for e in k.excludes() {
            for f in fills {
                both.push(format!("{include}{f}{}", e.text()));
                both.push(format!("{}{f}{include}", e.text()));
            }
            texts.push(e.text().to_string());
        }
        texts.push(include);
    }
    let mut out: Vec<String> = [
        "id_rsa",
        "id_rsa.pub",
        "id_",
        "id",
        "i",
        "xid_rsa",
        "id_ed25519_sk_with_a_long_name_here",
        "id_ID.utf8",
        "id_exact",
        "id_exactly",
        "server.key",
        ".key",
        "key",
        "server.key.bak",
        "rndc.key",
        "a.p12",
        "truststore.jks",
        "my.truststore.jks",
        "keystore.jks",
        "secring.gpg",
        "secring.gpg~",
        "ssh_host_rsa_key",
        "ssh_host_rsa_key.pub",
        "ssh_host_ed25519_key-cert.pub",
        "0123456789abcdef",
        "0123456789abcdefg",
        "0123456789abcdef0123456789abcdef",
        "0123456789abcdef0123456789abcdef0",
        "ключ",
        "ключи",
        "ключ.pub",
        "клю",
        "秘密鍵.pem",
        "秘密鍵.pe",
        "x秘密鍵.pem",
        "ない鍵",
        "偽の鍵",
        "本当の鍵",
        "鍵",
        "clé.clé",
        "une.clé",
        "une.cle",
        "README.md",
        "pubring.kbx",
        "ABCDEF0123.key",
        "ABCDEF0123.lock",
        "k",
        "kk",
        "y",
        "yy",
        "x_long_suffix.key",
        "_long_suffix.key",
        "long_suffix.key",
        "sixteen_byte.p12",
        "a_sixteen_byte.p12",
        "sixteen_byte_pre.p12",
        "sixteen_byte_pre",
        "sixteen_byte_pr",
    ]
    .map(String::from)
    .to_vec();
    out.extend(both);
    for t in &texts {
        for f in fills {
            out.push(format!("{f}{t}"));
            out.push(format!("{t}{f}"));
            out.push(format!("{f}{t}{f}"));
        }
        out.extend(shorter(t).map(String::from));
        for len in [7, 8, 9, 15, 16, 17, 31, 32, 33, 40] {
            for pad in ["a", "é", "鍵"] {
                let padding = pad.repeat(len);
                let room = len.saturating_sub(t.len());
                out.push(format!("{}{t}", cut(&padding, room)));
                out.push(format!("{t}{}", cut(&padding, room)));
                out.push(cut(&format!("{t}{padding}"), len).to_string());
            }
        }
    }
    out.retain(|n| !n.is_empty() && !n.contains('/'));
    out.sort();
    out.dedup();
    out
}

/// Parents: none (a failed open: the kernel matches the name without
/// one), unrelated ones, every `dir` text and names next to them.
fn parents(cfg: &Config) -> Vec<Option<String>> {
    let mut out = vec![None, Some("etc".to_string()), Some("ssl".to_string())];
    for k in &cfg.key_name {
        if let Some(d) = &k.dir {
            out.push(Some(d.clone()));
            out.push(Some(format!("{d}x")));
            out.push(Some(format!("x{d}")));
            out.extend(shorter(d).map(|s| Some(s.to_string())));
        }
    }
    out
}

fn check(what: &str, text: &str) -> usize {
    let cfg = Config::parse(text, what).unwrap();
    let table = name_patterns(&cfg).unwrap();
    let stale = [[0u8; 16], [0xff; 16], *b"/etc/ssl/private"];
    let (names, parents) = (names(&cfg), parents(&cfg));
    let mut checked = 0;
    for name in &names {
        for parent in &parents {
            let parent = parent.as_deref();
            let user = user_rules(&cfg, name, parent);
            for s in &stale {
                let kernel = kernel_rules(&table, name, parent, s);
                assert_eq!(
                    kernel, user,
                    "{what}: {name:?} in {parent:?} (stale {s:?}): kernel {kernel:#x}, user space {user:#x}"
                );
            }
            let first = (user != 0).then(|| user.trailing_zeros() as usize);
            assert_eq!(name_matches(&cfg.key_name, name, parent), first);
            checked += 1;
        }
    }
    // Every rule matches some name of the table, and every rule with
    // excludes has a name its include matches and an exclude drops.
    for (i, k) in cfg.key_name.iter().enumerate() {
        let pairs = || {
            names
                .iter()
                .flat_map(|n| parents.iter().map(move |p| (n, p.as_deref())))
        };
        assert!(
            pairs().any(|(n, p)| k.matches(n, p)),
            "{what}: rule {i} ({k}) never matches"
        );
        assert!(
            k.exclude.is_empty()
                || pairs().any(|(n, p)| k.include().matches(n, p) && !k.matches(n, p)),
            "{what}: rule {i} ({k}) never excludes"
        );
    }
    checked
}

#[test]
fn the_default_rules_match_the_same_names_in_both_matchers() {
    let n = check("default config", DEFAULT_CONFIG);
    assert!(n > 1000, "{n}");
}

#[test]
fn rules_at_the_word_edges_match_the_same_names_in_both_matchers() {
    for (text, len) in [
        ("_long_suffix.key", 16),
        ("sixteen_byte_pre", 16),
        ("exactly_16_bytes", 16),
        ("exactly_17_bytes_", 17),
        ("an_exact_name_of_thirty_two_byte", 32),
        ("a_directory_name_of_32_bytes_xyz", 32),
        ("sixteen_byte.p12", 16),
        ("ключ", 8),
        ("秘密鍵.pem", 13),
    ] {
        assert_eq!(text.len(), len, "{text}");
    }
    let cfg = Config::parse(TRICKY, "tricky").unwrap();
    let patterns: usize = cfg.key_name.iter().map(|k| 1 + k.excludes().len()).sum();
    assert_eq!(patterns, sensor_common::names::MAX_PATTERNS);
    let n = check("tricky", TRICKY);
    assert!(n > 10000, "{n}");
}
