//! tracefs: mounted by the sensor when missing; tracepoint formats give the
//! offsets of tracepoint fields on the running kernel.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The tracefs root, mounting it at /sys/kernel/tracing when no tracefs is
/// mounted yet.
pub fn ensure_mounted() -> Result<PathBuf> {
    if let Some(root) = find() {
        return Ok(root);
    }
    let target = Path::new(CANDIDATES[0]);
    nix::mount::mount(
        Some("tracefs"),
        target,
        Some("tracefs"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .with_context(|| format!("mounting tracefs on {}", target.display()))?;
    tracing::info!("mounted tracefs on {}", target.display());
    find().context("tracefs mounted but has no events directory")
}

fn find() -> Option<PathBuf> {
    CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("events").is_dir())
}

/// True when the tracepoint exists on this kernel.
pub fn has_tracepoint(category: &str, name: &str) -> bool {
    find().is_some_and(|r| r.join("events").join(category).join(name).is_dir())
}

/// Byte offset of `field` in the record of tracepoint `category:name`.
pub fn field_offset(category: &str, name: &str, field: &str) -> Result<u32> {
    let root = find().context("tracefs is not mounted")?;
    let path = root.join("events").join(category).join(name).join("format");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    parse_field_offset(&text, field)
        .with_context(|| format!("{category}:{name} has no field {field}"))
}

/// Parses lines like `\tfield:long ret;\toffset:16;\tsize:8;\tsigned:1;`.
pub fn parse_field_offset(format: &str, field: &str) -> Result<u32> {
    for line in format.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut parts = rest.split(';');
        let decl = parts.next().unwrap_or("").trim();
        let name = decl
            .rsplit(|c: char| c.is_whitespace() || c == '*')
            .next()
            .unwrap_or("");
        let name = name.split('[').next().unwrap_or(name);
        if name != field {
            continue;
        }
        for p in parts {
            if let Some(v) = p.trim().strip_prefix("offset:") {
                return Ok(v.trim().parse()?);
            }
        }
    }
    bail!("field {field} not found")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_format() {
        let f = "name: io_uring_complete\nID: 1\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:void * ctx;\toffset:8;\tsize:8;\tsigned:0;\n\tfield:void * req;\toffset:16;\tsize:8;\tsigned:0;\n\tfield:u64 user_data;\toffset:24;\tsize:8;\tsigned:0;\n\tfield:int res;\toffset:32;\tsize:4;\tsigned:1;\n";
        assert_eq!(parse_field_offset(f, "req").unwrap(), 16);
        assert_eq!(parse_field_offset(f, "res").unwrap(), 32);
        assert!(parse_field_offset(f, "nope").is_err());
    }
}
