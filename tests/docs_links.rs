//! The documentation's links hold: every relative link in README.md, CHANGELOG.md and
//! docs/*.md names a file that exists, and, with a `#fragment`, a heading of that file (GitHub's
//! anchors: lowercase, punctuation dropped, spaces to hyphens, `-1`, `-2`… for repeats); and
//! every page in docs/ is linked from the README, so none is orphaned.
//!
//! Links are Markdown's inline `[text](target)` and reference definitions `[label]: target`,
//! outside fenced code blocks and code spans. Absolute URLs (`https:`, `mailto:`…) are not
//! fetched: CI has no network, and their health is not the repository's to hold.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md, CHANGELOG.md and every docs/*.md, as paths relative to the repository.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![PathBuf::from("README.md"), PathBuf::from("CHANGELOG.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .expect("a docs/ directory")
        .map(|e| e.expect("a docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .map(|p| PathBuf::from("docs").join(p.file_name().expect("a file name")))
        .collect();
    docs.sort();
    assert!(!docs.is_empty(), "docs/ holds no .md page");
    pages.extend(docs);
    pages
}

fn read(page: &Path) -> String {
    std::fs::read_to_string(repo().join(page))
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", page.display()))
}

/// The page's lines outside fenced code blocks, with code spans blanked out.
fn prose(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push(without_code_spans(line));
        }
    }
    out
}

/// `line` with every `` `code` `` span replaced by spaces (a link inside one is not a link).
fn without_code_spans(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
            out.push(' ');
        } else {
            out.push(if in_code { ' ' } else { c });
        }
    }
    out
}

/// Every link target of the page: `[text](target)` and `[label]: target`.
fn links(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose(markdown) {
        // Reference definitions: `[label]: target` at the start of a line.
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix('[') {
            if let Some((_, target)) = rest.split_once("]: ") {
                out.push(target.split_whitespace().next().unwrap_or("").to_string());
                continue;
            }
        }
        // Inline links: `](` then the target up to the matching `)`.
        let mut rest = line.as_str();
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let mut depth = 0usize;
            let end = after
                .char_indices()
                .find(|&(_, c)| match c {
                    '(' => {
                        depth += 1;
                        false
                    }
                    ')' if depth == 0 => true,
                    ')' => {
                        depth -= 1;
                        false
                    }
                    _ => false,
                })
                .map(|(j, _)| j)
                .unwrap_or_else(|| panic!("a link without its closing `)`: {line}"));
            // A title after the target (`[t](url "title")`) is not part of it.
            let target = after[..end].split_whitespace().next().unwrap_or("");
            out.push(target.to_string());
            rest = &after[end..];
        }
    }
    out
}

fn is_absolute_url(target: &str) -> bool {
    target.split_once(':').is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    })
}

/// GitHub's anchor for a heading's text: formatting removed, lowercase, everything but
/// letters, digits, `_`, `-` and spaces dropped, spaces to hyphens.
fn anchor(heading: &str) -> String {
    let mut text = String::new();
    // Links in a heading render as their text.
    let mut rest = heading;
    while let Some(i) = rest.find("](") {
        let Some(open) = rest[..i].rfind('[') else {
            break;
        };
        text.push_str(&rest[..open]);
        text.push_str(&rest[open + 1..i]);
        let close = rest[i..].find(')').map_or(rest.len(), |j| i + j + 1);
        rest = &rest[close..];
    }
    text.push_str(rest);
    text.trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '_' || *c == '-' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of every heading of a page (`#`… lines outside code), repeats numbered.
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = anchor(&line[hashes..].replace('`', ""));
        let mut a = base.clone();
        // Bounded by the number of headings already seen.
        for n in 1.. {
            if !seen.contains(&a) {
                break;
            }
            a = format!("{base}-{n}");
        }
        seen.insert(a);
    }
    seen
}

/// `base/target` with `.` and `..` resolved, or None when it climbs out of the repository.
fn resolve(base: &Path, target: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in base.join(target).components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Every relative link of `page` as (the file it names, relative to the repository; fragment).
fn relative_links(page: &Path) -> Vec<(String, PathBuf, Option<String>)> {
    let dir = page.parent().unwrap_or(Path::new(""));
    links(&read(page))
        .into_iter()
        .filter(|t| !is_absolute_url(t))
        .map(|t| {
            let (path, fragment) = match t.split_once('#') {
                Some((p, f)) => (p.to_string(), Some(f.to_string())),
                None => (t.clone(), None),
            };
            let file = if path.is_empty() {
                page.to_path_buf()
            } else {
                resolve(dir, &path).unwrap_or_else(|| {
                    panic!("{}: link `{t}` leaves the repository", page.display())
                })
            };
            (t, file, fragment)
        })
        .collect()
}

#[test]
fn every_relative_link_names_an_existing_file_and_heading() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in pages() {
        for (target, file, fragment) in relative_links(&page) {
            checked += 1;
            if target.is_empty() {
                broken.push(format!("{}: an empty link target", page.display()));
                continue;
            }
            if !repo().join(&file).exists() {
                broken.push(format!(
                    "{}: `{target}`: no file {}",
                    page.display(),
                    file.display()
                ));
                continue;
            }
            if let Some(f) = fragment {
                if file.extension().is_some_and(|x| x == "md") {
                    let known = anchors(&read(&file));
                    if !known.contains(&f) {
                        broken.push(format!(
                            "{}: `{target}`: {} has no heading with anchor #{f}",
                            page.display(),
                            file.display()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        checked > 0,
        "no relative link found at all: is the link parser broken?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// Design drafts of features not yet built: in `docs/` so their links are checked, but not
/// linked from the README until the feature lands (then the entry goes).
const DRAFTS: &[&str] = &[];

#[test]
fn every_docs_page_is_linked_from_the_readme() {
    let linked: BTreeSet<PathBuf> = relative_links(Path::new("README.md"))
        .into_iter()
        .map(|(_, file, _)| file)
        .collect();
    let orphans: Vec<String> = pages()
        .into_iter()
        .filter(|p| p.starts_with("docs"))
        .filter(|p| !linked.contains(p))
        .filter(|p| !DRAFTS.iter().any(|d| Path::new(d) == p.as_path()))
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        orphans.is_empty(),
        "docs pages the README does not link: {orphans:?}"
    );
    assert!(
        linked.contains(Path::new("CHANGELOG.md")),
        "the README does not link CHANGELOG.md"
    );
}

#[test]
fn the_link_and_anchor_rules_themselves() {
    assert_eq!(
        anchor("NAT behaviour discovery (RFC 5780)"),
        "nat-behaviour-discovery-rfc-5780"
    );
    assert_eq!(anchor("What udp_coalesce does"), "what-udp_coalesce-does");
    assert_eq!(
        anchor("Why turnd, and not coturn?"),
        "why-turnd-and-not-coturn"
    );
    assert_eq!(anchor("RFC 8656: TURN"), "rfc-8656-turn");
    assert_eq!(anchor("See [the docs](docs/a.md) now"), "see-the-docs-now");
    let md = "# A\n## A\n```\n# not a heading\n```\n### `code` heading\n";
    let a = anchors(md);
    assert_eq!(
        a.into_iter().collect::<Vec<_>>(),
        ["a", "a-1", "code-heading"].map(String::from)
    );
    let l = links(
        "[x](docs/a.md#b) `[not](c.md)` [y](https://e.org/(z)) [t](d.md \"title\")\n[r]: e.md\n```\n[no](f.md)\n```\n",
    );
    assert_eq!(l, ["docs/a.md#b", "https://e.org/(z)", "d.md", "e.md"]);
    assert!(is_absolute_url("https://example.com") && is_absolute_url("mailto:a@b"));
    assert!(!is_absolute_url("docs/a.md") && !is_absolute_url("#x"));
    assert_eq!(
        resolve(Path::new("docs"), "../README.md"),
        Some(PathBuf::from("README.md"))
    );
    assert_eq!(resolve(Path::new(""), "../x"), None);
}
