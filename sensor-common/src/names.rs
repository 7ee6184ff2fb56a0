//! Key-file name patterns, matched in the kernel with a few word compares.
//!
//! A name of `len` bytes is summarised by its first 16 bytes (`head`, zero
//! past the end of the name) and its last 16 bytes (`tail`, right aligned,
//! zero in front of a shorter name), each as two little-endian u64 words.
//! A prefix (≤ 16 bytes) is a masked compare of `head`, a suffix (≤ 16 bytes)
//! a masked compare of `tail`, an exact name (≤ 32 bytes) compares the length
//! and both. The same code runs in the kernel and in user-space tests.

pub const MAX_PATTERNS: usize = 32;
pub const MAX_AFFIX: usize = 16;
pub const MAX_EXACT: usize = 32;

pub const PAT_EXACT: u8 = 1;
pub const PAT_PREFIX: u8 = 2;
pub const PAT_SUFFIX: u8 = 3;
/// Exact name of the parent directory.
pub const PAT_DIR: u8 = 4;

/// Head and tail words of a name.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct NameKey {
    pub len: u32,
    pub _pad: u32,
    pub head: [u64; 2],
    pub tail: [u64; 2],
}

#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct NamePattern {
    /// PAT_* value (0 = unused slot).
    pub kind: u8,
    /// Pattern length in bytes.
    pub len: u8,
    /// Rule (bit index) this pattern belongs to.
    pub rule: u8,
    /// 1 when this pattern excludes its rule instead of including it.
    pub exclude: u8,
    pub _pad: u32,
    /// Pattern words (head for prefix/exact, tail for suffix/exact).
    pub words: NameKey,
    /// Mask applied to the name's words before comparing.
    pub mask: NameKey,
}

/// The whole pattern table, one array-map value.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct NamePatterns {
    pub count: u32,
    /// 1 when some pattern is PAT_DIR (the parent's name is then read).
    pub has_dir: u32,
    pub pats: [NamePattern; MAX_PATTERNS],
}

impl Default for NamePatterns {
    fn default() -> Self {
        Self {
            count: 0,
            has_dir: 0,
            pats: [NamePattern::default(); MAX_PATTERNS],
        }
    }
}

/// A mask of the low `n` bytes of a word (n ≤ 8).
#[inline(always)]
pub fn low_bytes(n: u32) -> u64 {
    if n >= 8 {
        u64::MAX
    } else {
        (1u64 << (n * 8)) - 1
    }
}

/// Builds the words of a name of `len` bytes from its first 16 bytes
/// (`head_raw`, bytes past `len` may hold anything) and, when `len >= 16`,
/// its last 16 bytes (`tail_raw`).
#[inline(always)]
pub fn name_key(head_raw: [u64; 2], tail_raw: [u64; 2], len: u32) -> NameKey {
    let h0 = head_raw[0] & low_bytes(len);
    let h1 = if len > 8 {
        head_raw[1] & low_bytes(len - 8)
    } else {
        0
    };
    let (t0, t1) = if len >= 16 {
        (tail_raw[0], tail_raw[1])
    } else if len == 0 {
        (0, 0)
    } else {
        // The name as a 128-bit number, shifted so its last byte is byte 15.
        let s = (16 - len) * 8; // 8..=120
        if s >= 64 {
            (0, h0 << (s - 64))
        } else {
            (h0 << s, (h1 << s) | (h0 >> (64 - s)))
        }
    };
    NameKey {
        len,
        _pad: 0,
        head: [h0, h1],
        tail: [t0, t1],
    }
}

/// Words of a name held in a byte slice (user space, tests).
pub fn name_key_of(name: &[u8]) -> NameKey {
    let mut head = [0u8; 16];
    let n = if name.len() < 16 { name.len() } else { 16 };
    head[..n].copy_from_slice(&name[..n]);
    let mut tail = [0u8; 16];
    if name.len() >= 16 {
        tail.copy_from_slice(&name[name.len() - 16..]);
    }
    name_key(words(&head), words(&tail), name.len() as u32)
}

fn words(b: &[u8; 16]) -> [u64; 2] {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&b[..8]);
    hi.copy_from_slice(&b[8..]);
    [u64::from_le_bytes(lo), u64::from_le_bytes(hi)]
}

impl NamePattern {
    /// Builds a pattern; `None` when the text is empty or too long for `kind`.
    pub fn new(kind: u8, text: &[u8], rule: u8, exclude: bool) -> Option<Self> {
        let max = match kind {
            PAT_PREFIX | PAT_SUFFIX => MAX_AFFIX,
            PAT_EXACT | PAT_DIR => MAX_EXACT,
            _ => return None,
        };
        if text.is_empty() || text.len() > max {
            return None;
        }
        let words = name_key_of(text);
        let mask = name_key_of(&[0xffu8; MAX_EXACT][..text.len()]);
        let (words, mask) = match kind {
            PAT_PREFIX => (
                NameKey {
                    tail: [0, 0],
                    ..words
                },
                NameKey {
                    tail: [0, 0],
                    ..mask
                },
            ),
            PAT_SUFFIX => (
                NameKey {
                    head: [0, 0],
                    ..words
                },
                NameKey {
                    head: [0, 0],
                    ..mask
                },
            ),
            _ => (words, mask),
        };
        Some(Self {
            kind,
            len: text.len() as u8,
            rule,
            exclude: exclude as u8,
            _pad: 0,
            words,
            mask,
        })
    }

    /// Does the pattern match a name (or, for PAT_DIR, the parent's name)?
    #[inline(always)]
    pub fn matches(&self, name: &NameKey) -> bool {
        let len = self.len as u32;
        let head_eq = (name.head[0] & self.mask.head[0]) == self.words.head[0]
            && (name.head[1] & self.mask.head[1]) == self.words.head[1];
        let tail_eq = (name.tail[0] & self.mask.tail[0]) == self.words.tail[0]
            && (name.tail[1] & self.mask.tail[1]) == self.words.tail[1];
        match self.kind {
            PAT_EXACT | PAT_DIR => name.len == len && head_eq && tail_eq,
            PAT_PREFIX => name.len >= len && head_eq,
            PAT_SUFFIX => name.len >= len && tail_eq,
            _ => false,
        }
    }
}

impl NamePatterns {
    /// Bits of the rules that match `name` (with `parent` the parent
    /// directory's name, all zero when unknown) and are not excluded.
    #[inline(always)]
    pub fn eval(&self, name: &NameKey, parent: &NameKey) -> u32 {
        let mut include = 0u32;
        let mut exclude = 0u32;
        let mut i = 0;
        while i < MAX_PATTERNS {
            if i as u32 >= self.count {
                break;
            }
            let p = &self.pats[i];
            let hit = if p.kind == PAT_DIR {
                p.matches(parent)
            } else {
                p.matches(name)
            };
            if hit {
                let bit = 1u32 << (p.rule & 31);
                if p.exclude != 0 {
                    exclude |= bit;
                } else {
                    include |= bit;
                }
            }
            i += 1;
        }
        include & !exclude
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(pats: &[NamePattern]) -> NamePatterns {
        let mut t = NamePatterns::default();
        for (i, p) in pats.iter().enumerate() {
            t.pats[i] = *p;
            if p.kind == PAT_DIR {
                t.has_dir = 1;
            }
        }
        t.count = pats.len() as u32;
        t
    }

    #[test]
    fn prefix_with_suffix_exclusion() {
        let t = table(&[
            NamePattern::new(PAT_PREFIX, b"id_", 0, false).unwrap(),
            NamePattern::new(PAT_SUFFIX, b".pub", 0, true).unwrap(),
        ]);
        let m = |n: &[u8]| t.eval(&name_key_of(n), &NameKey::default());
        assert_eq!(m(b"id_rsa"), 1);
        assert_eq!(m(b"id_ed25519"), 1);
        assert_eq!(m(b"id_ed25519_sk_with_a_long_name_here"), 1);
        assert_eq!(m(b"id_rsa.pub"), 0);
        assert_eq!(m(b"id_"), 1);
        assert_eq!(m(b"i"), 0);
        assert_eq!(m(b"xid_rsa"), 0);
    }

    #[test]
    fn suffixes_all_lengths() {
        let t = table(&[
            NamePattern::new(PAT_SUFFIX, b".key", 0, false).unwrap(),
            NamePattern::new(PAT_SUFFIX, b".p12", 1, false).unwrap(),
            NamePattern::new(PAT_SUFFIX, b"_long_suffix.key", 2, false).unwrap(),
        ]);
        let m = |n: &[u8]| t.eval(&name_key_of(n), &NameKey::default());
        for len in 0..40 {
            let mut name = [b'a'; 44];
            name[len..len + 4].copy_from_slice(b".key");
            assert_eq!(m(&name[..len + 4]) & 1, 1, "len {len}");
            assert_eq!(m(&name[..len + 3]), 0, "len {len}");
        }
        assert_eq!(m(b"server.p12"), 2);
        assert_eq!(m(b".p12"), 2);
        assert_eq!(m(b"p12"), 0);
        assert_eq!(m(b"x_long_suffix.key"), 5);
        assert_eq!(m(b"_long_suffix.key"), 5);
        assert_eq!(m(b"long_suffix.key"), 1);
    }

    #[test]
    fn exact_names_up_to_32() {
        let t = table(&[
            NamePattern::new(PAT_EXACT, b"ssh_host_ed25519_key", 0, false).unwrap(),
            NamePattern::new(PAT_EXACT, b"shadow", 1, false).unwrap(),
        ]);
        let m = |n: &[u8]| t.eval(&name_key_of(n), &NameKey::default());
        assert_eq!(m(b"ssh_host_ed25519_key"), 1);
        assert_eq!(m(b"ssh_host_ed25519_kez"), 0);
        assert_eq!(m(b"ssh_host_ed25519_key.pub"), 0);
        assert_eq!(m(b"xsh_host_ed25519_key"), 0);
        assert_eq!(m(b"shadow"), 2);
        assert_eq!(m(b"shadow-"), 0);
        assert_eq!(m(b"shado"), 0);
        assert!(NamePattern::new(PAT_EXACT, &[b'a'; 33], 0, false).is_none());
        assert!(NamePattern::new(PAT_SUFFIX, &[b'a'; 17], 0, false).is_none());
    }

    #[test]
    fn dir_pattern_uses_parent() {
        let t = table(&[NamePattern::new(PAT_DIR, b"private-keys-v1.d", 3, false).unwrap()]);
        let parent = name_key_of(b"private-keys-v1.d");
        assert_eq!(t.eval(&name_key_of(b"ABCD.key"), &parent), 8);
        assert_eq!(t.eval(&name_key_of(b"ABCD.key"), &NameKey::default()), 0);
        assert_eq!(t.eval(&name_key_of(b"ABCD.key"), &name_key_of(b"other")), 0);
    }

    #[test]
    fn garbage_past_the_name_is_ignored() {
        // The kernel reads 16 bytes of inline name storage: stale bytes follow.
        let mut raw = *b"id_rsa\0ZZZZZZZZZ";
        let clean = name_key_of(b"id_rsa");
        let k = name_key(words(&raw), [0, 0], 6);
        assert_eq!(k, clean);
        raw[7] = 0;
        assert_eq!(name_key(words(&raw), [9, 9], 6), clean);
    }
}
