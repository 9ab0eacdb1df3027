//! The shape of `src/`: every import points down, and files stay small.
//!
//! Reads the sources as text. An edge `a -> b` is any `crate::b` path (or, inside a
//! top-level module, `super::b` / `crate::a::b` for a sibling file) outside comments and
//! unit tests. Top-level modules are compared with each other; inside each top-level
//! module, its direct submodules are compared with each other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest file in `src/` without a stated reason.
const MAX_LINES: usize = 500;
/// How a longer file states its reason, in its first lines.
const REASON: &str = "//! (Longer than usual because";

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/node/publish.rs` → `["node", "publish"]`; `src/node/mod.rs` → `["node"]`.
fn module_path(root: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(root).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The code of a file without its comments and its `#[cfg(test)] mod tests`.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `{prefix}a::b` in `code`, as (a, b) with b possibly empty.
fn paths<'a>(code: &'a str, prefix: &'a str) -> impl Iterator<Item = (String, String)> + 'a {
    code.match_indices(prefix).filter_map(move |(i, _)| {
        if i > 0 {
            let before = code.as_bytes()[i - 1];
            if before.is_ascii_alphanumeric() || before == b'_' {
                return None;
            }
        }
        let rest = &code[i + prefix.len()..];
        let ident = |s: &str| -> String {
            s.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        };
        let a = ident(rest);
        let after = &rest[a.len()..];
        let b = after.strip_prefix("::").map(ident).unwrap_or_default();
        (!a.is_empty()).then_some((a, b))
    })
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let files: Vec<(Vec<String>, String)> = files
        .into_iter()
        .filter(|f| !f.starts_with(root.join("bin")) && !f.ends_with("main.rs"))
        .map(|f| (module_path(&root, &f), std::fs::read_to_string(&f).unwrap()))
        .collect();
    let modules: BTreeSet<String> = files.iter().map(|(m, _)| m.join("/")).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, text) in &files {
        let Some(top) = module.first() else { continue };
        let code = code(text);
        let mut add = |from: String, to: String| {
            if from != to && modules.contains(&to) {
                edges.entry(from).or_default().insert(to);
            }
        };
        for (a, b) in paths(&code, "crate::") {
            if &a != top {
                add(top.clone(), a);
            } else if module.len() > 1 && !b.is_empty() {
                add(format!("{top}/{}", module[1]), format!("{top}/{b}"));
            }
        }
        if module.len() == 2 {
            for (a, _) in paths(&code, "super::") {
                add(module.join("/"), format!("{top}/{a}"));
            }
        }
    }
    edges
}

fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        found: &mut Vec<Vec<String>>,
    ) {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_owned());
            found.push(cycle);
            return;
        }
        if !done.insert(node.to_owned()) {
            return;
        }
        stack.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            visit(next, edges, stack, done, found);
        }
        stack.pop();
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        visit(node, edges, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

#[test]
fn no_module_imports_a_module_that_imports_it() {
    let edges = graph();
    assert!(
        edges.get("node").is_some_and(|e| e.contains("backplane")),
        "the scan sees imports (node uses the backplane): {edges:?}"
    );
    let found = cycles(&edges);
    assert!(
        found.is_empty(),
        "import cycles in src/: {}",
        found
            .iter()
            .map(|c| c.join(" -> "))
            .collect::<Vec<_>>()
            .join("; ")
    );
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let mut edges = BTreeMap::new();
    edges.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    edges.insert("b".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert_eq!(cycles(&edges).len(), 1);
}

#[test]
fn no_file_in_src_is_long_without_a_reason() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            let lines = text.lines().count();
            let reason = text.lines().take(5).any(|l| l.starts_with(REASON));
            (lines > MAX_LINES && !reason).then(|| format!("{} ({lines} lines)", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines without a `{REASON} …)` line: {long:?}"
    );
}
