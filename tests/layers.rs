//! The shape of the crate, held as a test: each top-level module of `src/` imports only from the
//! layers below it (docs/ARCHITECTURE.md draws them), so there is no cycle and no arrow running
//! back up. Read from the source as text: every `crate::NAME` path outside a `#[cfg(test)]`
//! module (tests may reach anything), comments and doc comments included, as a reader sees them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top to bottom; a module may import from the layers after its own.
const LAYERS: &[&[&str]] = &[
    &["cli"],
    &["demo"],
    &["policy"],
    &["autoscaler"],
    &["local"],
    &["sim", "discovery", "front", "kv", "template", "replica"],
    &["app"],
    &["exoscale", "load", "shutdown"],
    &["telemetry"],
    &["config"],
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Top-level module -> the top-level modules it names.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if top == "main" || top == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let code = text.split("\n#[cfg(test)]").next().unwrap();
        let deps = graph.entry(top.clone()).or_default();
        let mut names = Vec::new();
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // `use crate::{a, b::c}`
                let inner = &group[..group.find('}').unwrap_or(group.len())];
                names.extend(
                    inner
                        .split(',')
                        .map(|p| p.trim().split("::").next().unwrap_or("")),
                );
            } else {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                names.push(&rest[..end]);
            }
        }
        for n in names {
            if !n.is_empty() && n != top {
                deps.insert(n.to_owned());
            }
        }
    }
    graph
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

#[test]
fn every_module_has_a_layer_and_imports_only_from_below() {
    let graph = imports();
    let mut problems = Vec::new();
    for (m, deps) in &graph {
        let Some(mine) = layer_of(m) else {
            problems.push(format!(
                "src/{m} has no layer in LAYERS (and docs/ARCHITECTURE.md)"
            ));
            continue;
        };
        for d in deps {
            match layer_of(d) {
                Some(theirs) if theirs > mine => {}
                Some(_) => problems.push(format!("{m} -> {d}: not a layer below")),
                None if graph.contains_key(d) => {
                    problems.push(format!("{m} -> {d}: {d} has no layer"))
                }
                None => {} // not a module of ours (a word in a comment)
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_layers_leave_no_cycle() {
    // Implied by the test above; checked on its own so a broken layer table still shows cycles.
    let graph = imports();
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == m) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(m.to_owned());
            return Some(cycle);
        }
        if !done.insert(m.to_owned()) {
            return None;
        }
        stack.push(m.to_owned());
        for d in graph.get(m).into_iter().flatten() {
            if graph.contains_key(d)
                && let Some(c) = visit(d, graph, stack, done)
            {
                return Some(c);
            }
        }
        stack.pop();
        None
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        let mut stack = Vec::new();
        if let Some(c) = visit(m, &graph, &mut stack, &mut done) {
            panic!("import cycle: {}", c.join(" -> "));
        }
    }
}
