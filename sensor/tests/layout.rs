//! The user-space crate keeps its shape (docs/architecture.md, "The
//! layout"): `sensor/src/` is laid out by stage, each stage imports only
//! the stages before it and the shared leaves, and no module imports a
//! module that (directly or not) imports it back. Read from the `crate::`
//! paths of every source file (test modules excluded).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

/// Stages in the order an event flows; `agent` composes them all.
const STAGES: [&str; 7] = [
    "kernel",
    "ingest",
    "enrich",
    "detect",
    "correlate",
    "output",
    "agent",
];
/// Shared by every stage: the alert schema, the rule table, config,
/// metrics, redaction. `config` reads the scoring and correlation settings'
/// types from `correlate`; the others import no stage.
const LEAVES: [&str; 5] = ["alert", "rules", "config", "metrics", "redact"];

/// Module path of a source file (`detect/flows.rs` -> `detect::flows`).
fn module_of(rel: &Path) -> String {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

fn sources(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, root, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let name = p.file_name().unwrap().to_string_lossy();
            // Test-only modules (declared under #[cfg(test)]).
            if name == "tests.rs" || name.ends_with("_tests.rs") {
                continue;
            }
            let text = fs::read_to_string(&p).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap().to_string();
            out.push((module_of(p.strip_prefix(root).unwrap()), code));
        }
    }
}

/// Every path named after `crate::`, with `use crate::{a::{b, c}, d}`
/// groups expanded.
fn crate_paths(code: &str) -> Vec<String> {
    fn expand(prefix: &str, body: &str, out: &mut Vec<String>) {
        let (mut depth, mut cur, mut items) = (0, String::new(), Vec::new());
        for ch in body.chars() {
            match ch {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
            if ch == ',' && depth == 0 {
                items.push(std::mem::take(&mut cur));
            } else {
                cur.push(ch);
            }
        }
        items.push(cur);
        for it in items {
            let it: String = it.split_whitespace().collect::<Vec<_>>().join(" ");
            if it.is_empty() {
                continue;
            }
            let full = if prefix.is_empty() {
                it.clone()
            } else {
                format!("{prefix}::{it}")
            };
            match full.find("::{") {
                Some(i) if full.ends_with('}') => {
                    expand(&full[..i], &full[i + 3..full.len() - 1], out)
                }
                _ => out.push(full),
            }
        }
    }
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(body) = rest.strip_prefix('{') {
            let mut depth = 1;
            let end = body
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map(|(i, _)| i)
                .unwrap();
            expand("", &body[..end], &mut out);
            rest = &body[end..];
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            out.push(rest[..end].trim_end_matches(':').to_string());
        }
    }
    out
}

/// The module -> modules it imports graph of sensor/src.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &root, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut g = BTreeMap::new();
    for (m, code) in &files {
        let mut deps = BTreeSet::new();
        for p in crate_paths(code) {
            let parts: Vec<&str> = p.split("::").collect();
            // The longest prefix that is a module.
            let target = (1..=parts.len())
                .rev()
                .map(|n| parts[..n].join("::"))
                .find(|c| modules.contains(c));
            if let Some(t) = target
                && t != *m
            {
                deps.insert(t);
            }
        }
        g.insert(m.clone(), deps);
    }
    g
}

fn stage(module: &str) -> &str {
    module.split("::").next().unwrap()
}

#[test]
fn every_module_is_in_a_stage_or_a_shared_leaf() {
    for m in graph().keys() {
        let s = stage(m);
        assert!(
            m.is_empty() || STAGES.contains(&s) || LEAVES.contains(&s),
            "sensor/src/{m}: not in a stage folder ({STAGES:?}) nor a shared leaf ({LEAVES:?})"
        );
    }
}

#[test]
fn stages_import_only_earlier_stages_and_the_shared_leaves() {
    let rank = |s: &str| STAGES.iter().position(|x| *x == s);
    for (m, deps) in graph() {
        let from = stage(&m);
        for d in deps {
            let to = stage(&d);
            if from == to {
                continue;
            }
            let ok = match (rank(from), rank(to)) {
                (Some(a), Some(b)) => b < a,
                // A leaf imports no stage, except config's scoring and
                // correlation settings.
                (None, Some(_)) => from == "config" && to == "correlate",
                (_, None) => LEAVES.contains(&to) && !(LEAVES.contains(&from) && to != "alert"),
            };
            assert!(ok, "{m} imports {d}: {from} may not depend on {to}");
        }
    }
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let g = graph();
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(x) = todo.pop() {
            for y in g.get(&x).into_iter().flatten() {
                if seen.insert(y.clone()) {
                    todo.push(y.clone());
                }
            }
        }
        seen
    };
    for (m, deps) in &g {
        for d in deps {
            assert!(
                !reach(d).contains(m),
                "import cycle: {m} imports {d}, which leads back to {m}"
            );
        }
    }
}
