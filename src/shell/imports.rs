//! A check that the shell's files do not import each other in a circle, and that the shell
//! never imports config (config builds the shell's `ShellOptions`; the edge goes one way).
//!
//! It reads the source: every `super::NAME` of a file directly in `src/shell/` and every
//! `crate::shell::NAME` anywhere in it is an edge to module `NAME` (a directory module —
//! `udp/`, `worker/` — is one node with its files). Comments and `#[cfg(test)]` modules are
//! left out: a doc link or a test may look anywhere. A cycle fails the test with its path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The module a path prefix points at, and every module named in a `{...}` group after it.
fn targets(text: &str, prefix: &str, out: &mut BTreeSet<String>) {
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        rest = &rest[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '{' => 1,
                        '}' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map_or(group.len(), |(i, _)| i);
            let mut d = 0;
            let mut start = 0;
            let inner = &group[..end];
            for (i, c) in inner.char_indices().chain([(inner.len(), ',')]) {
                match c {
                    '{' => d += 1,
                    '}' => d -= 1,
                    ',' if d == 0 => {
                        out.insert(ident(inner[start..i].trim()).to_string());
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(rest).to_string());
        }
    }
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// A file's code without comments and without its `#[cfg(test)]` module(s) (which by this
/// crate's layout come last).
fn code(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Module name → the shell modules it imports.
fn graph(shell: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = Vec::new();
    for e in std::fs::read_dir(shell).expect("src/shell") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            let node = p.file_name().unwrap().to_string_lossy().to_string();
            for f in std::fs::read_dir(&p).expect("module dir") {
                let f = f.expect("entry").path();
                let top = f.file_name().is_some_and(|n| n == "mod.rs");
                let tests = f.file_name().is_some_and(|n| n == "tests.rs");
                if !tests {
                    files.push((node.clone(), f, top));
                }
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            let node = p.file_stem().unwrap().to_string_lossy().to_string();
            files.push((node, p, true));
        }
    }
    for (node, path, top) in files {
        let text = code(&std::fs::read_to_string(&path).expect("source"));
        let mut names = BTreeSet::new();
        // `super::` of a file directly in src/shell (or a directory's mod.rs) is the shell.
        if top && node != "mod" {
            targets(&text, "super::", &mut names);
        }
        targets(&text, "crate::shell::", &mut names);
        assert!(
            // Split, so this file does not match itself.
            !text.contains(concat!("crate::", "config")),
            "{} imports config: the shell takes ShellOptions instead",
            path.display()
        );
        names.remove(&node);
        g.entry(node).or_default().extend(names);
    }
    g.remove("mod");
    g
}

/// A cycle in `g`, as the path around it.
fn cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut c = path[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            if g.contains_key(m) {
                if let Some(c) = visit(m, g, path, done) {
                    return Some(c);
                }
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(n, g, &mut Vec::new(), &mut done))
}

#[test]
fn the_shell_has_no_import_cycle_and_does_not_import_config() {
    let shell = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/shell");
    let g = graph(&shell);
    // The scan sees the files that matter (a guard against a scan that finds nothing).
    assert!(
        g["worker"].contains("tcp") && g["tcp"].contains("stream"),
        "{g:?}"
    );
    if let Some(c) = cycle(&g) {
        panic!("import cycle among src/shell's files: {}", c.join(" -> "));
    }
}

#[test]
fn the_check_finds_a_cycle() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut names = BTreeSet::new();
    targets("use super::{b, c::{D, E}};", "super::", &mut names);
    assert_eq!(names, ["b", "c"].map(String::from).into());
    g.insert("a".into(), names);
    g.insert("b".into(), ["a".to_string()].into());
    assert_eq!(cycle(&g).unwrap(), ["a", "b", "a"].map(String::from));
}
