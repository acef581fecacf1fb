//! The house rules ARCHITECTURE.md states, checked on the source as it is: no circle in the
//! module graph at any depth, no command importing another, no source file past 600 lines
//! before its tests. rust-analyzer's tidy tests are the model: the rule fails the suite, not a
//! review.
//!
//! The graph is read from the text: every path that starts at `crate::`, `super::` or `self::`
//! (in `use` trees and in code), and a parent module's own paths into its children, resolved
//! to the deepest module file that exists. A `mod` declaration is not an edge; a parent whose
//! code (or re-exports) uses a child while the child uses the parent's items is a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

const LIMIT: usize = 600;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every module file under `src/` (the binary's `main.rs` and test-only `tests.rs` aside) by
/// its module path.
fn modules() -> BTreeMap<Module, PathBuf> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![src()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src()).unwrap().with_extension("");
            let mut module: Module = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
            match module.last().map(String::as_str) {
                Some("main" | "tests") => continue,
                Some("lib") if module.len() == 1 => module.clear(),
                Some("mod") => {
                    module.pop();
                }
                _ => {}
            }
            out.insert(module, path);
        }
    }
    out
}

/// The file's text before its `#[cfg(test)] mod tests { … }`.
fn before_tests(text: &str) -> &str {
    text.find("#[cfg(test)]\nmod tests {").map_or(text, |i| &text[..i])
}

/// The text with comments, string and character literals blanked, so that a path in a doc
/// comment or a message is not taken for a dependency.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let end = text[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
            i = end;
        } else if b[i] == b'r'
            && (b[i + 1..].starts_with(b"\"") || b[i + 1..].starts_with(b"#"))
            && !ident_byte(prev(b, i))
        {
            let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
            if b.get(i + 1 + hashes) != Some(&b'"') {
                out.push('r');
                i += 1;
                continue;
            }
            let close = format!("\"{}", "#".repeat(hashes));
            let start = i + 2 + hashes;
            i = text[start..].find(&close).map_or(b.len(), |e| start + e + close.len());
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && char_literal(b, i) {
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("' '");
        } else {
            let c = text[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn prev(b: &[u8], i: usize) -> u8 {
    if i == 0 { b' ' } else { b[i - 1] }
}

fn ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// `'a'`, `'\n'`, `'\u{1F600}'` but not a lifetime `'a`.
fn char_literal(b: &[u8], i: usize) -> bool {
    match b.get(i + 1) {
        Some(b'\\') => true,
        Some(_) => {
            let rest = std::str::from_utf8(&b[i + 1..]).unwrap_or("");
            let mut chars = rest.chars();
            chars.next();
            chars.next() == Some('\'')
        }
        None => false,
    }
}

/// Every path the code names: `use` trees expanded (`a::{b, c::d}` → `a::b`, `a::c::d`), and
/// `a::b::c` runs elsewhere.
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = find_word(rest, "use") {
        let after = &rest[at + 3..];
        let end = after.find(';').unwrap_or(after.len());
        expand_tree(&after[..end].split_whitespace().collect::<String>(), &mut Vec::new(), &mut out);
        rest = &after[end..];
    }
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if ident_byte(bytes[i]) && (i == 0 || !ident_byte(bytes[i - 1]) && !code[..i].ends_with("::")) {
            let mut segments = Vec::new();
            let mut j = i;
            loop {
                let start = j;
                while j < bytes.len() && ident_byte(bytes[j]) {
                    j += 1;
                }
                segments.push(code[start..j].to_string());
                if code[j..].starts_with("::")
                    && code[j + 2..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                {
                    j += 2;
                } else {
                    break;
                }
            }
            if segments.len() > 1 {
                out.push(segments);
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

fn find_word(text: &str, word: &str) -> Option<usize> {
    let b = text.as_bytes();
    let mut from = 0;
    while let Some(at) = text[from..].find(word) {
        let at = from + at;
        let before = at == 0 || !ident_byte(b[at - 1]);
        let after = b.get(at + word.len()).is_none_or(|&c| !ident_byte(c));
        if before && after {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

fn expand_tree(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim_start_matches("::");
    if let Some(open) = tree.find('{') {
        let head: Vec<String> = tree[..open].split("::").filter(|s| !s.is_empty()).map(str::to_string).collect();
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let mut depth = 0;
        let mut start = 0;
        let mut items = Vec::new();
        for (k, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&inner[start..k]);
                    start = k + 1;
                }
                _ => {}
            }
        }
        items.push(&inner[start..]);
        let len = prefix.len();
        prefix.extend(head);
        for item in items.into_iter().filter(|i| !i.is_empty()) {
            if item == "self" {
                out.push(prefix.clone());
            } else {
                expand_tree(item, prefix, out);
            }
        }
        prefix.truncate(len);
    } else {
        let path = tree.split("as").next().unwrap_or(tree);
        let mut full = prefix.clone();
        full.extend(path.split("::").filter(|s| !s.is_empty()).map(str::to_string));
        out.push(full);
    }
}

/// The module a path names, if it is one of the crate's: the deepest existing module file.
fn resolve(from: &Module, path: &[String], modules: &BTreeMap<Module, PathBuf>) -> Option<Module> {
    let children: BTreeSet<&str> = modules
        .keys()
        .filter(|m| m.len() == from.len() + 1 && m.starts_with(from))
        .map(|m| m.last().unwrap().as_str())
        .collect();
    let mut base: Module;
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => {
            base = Vec::new();
            rest = &path[1..];
        }
        Some("super" | "self") => {
            base = from.clone();
            while let Some(first) = rest.first() {
                match first.as_str() {
                    "super" => {
                        base.pop();
                    }
                    "self" => {}
                    _ => break,
                }
                rest = &rest[1..];
            }
        }
        Some(first) if children.contains(first) => base = from.clone(),
        _ => return None,
    }
    base.extend(rest.iter().cloned());
    (0..=base.len()).rev().map(|n| base[..n].to_vec()).find(|m| modules.contains_key(m))
}

/// Paths named in serde's attributes (`skip_serializing_if = "super::is_false"`): code, though
/// written as strings.
fn attribute_paths(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| l.trim_start().starts_with("#[serde("))
        .flat_map(|l| l.split('"').skip(1).step_by(2))
        .filter(|s| ["crate::", "super::", "self::"].iter().any(|p| s.starts_with(p)))
        .map(|s| s.split("::").map(str::to_string).collect())
        .collect()
}

fn graph() -> BTreeMap<Module, BTreeSet<Module>> {
    let modules = modules();
    let mut edges = BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).unwrap();
        let code = code_only(before_tests(&text));
        let targets: BTreeSet<Module> = paths(&code)
            .iter()
            .chain(&attribute_paths(before_tests(&text)))
            .filter_map(|p| resolve(module, p, &modules))
            .filter(|target| target != module)
            .collect();
        edges.insert(module.clone(), targets);
    }
    edges
}

fn name(module: &Module) -> String {
    if module.is_empty() { "crate".into() } else { module.join("::") }
}

/// Strongly connected components with more than one module (Tarjan, iterative enough for a
/// crate's depth).
fn circles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on_stack: BTreeSet<&'a Module>,
        found: Vec<Vec<Module>>,
    }
    fn visit<'a>(w: &mut Walk<'a>, v: &'a Module) {
        let n = w.index.len();
        w.index.insert(v, n);
        w.low.insert(v, n);
        w.stack.push(v);
        w.on_stack.insert(v);
        for t in &w.edges[v] {
            let Some((t, _)) = w.edges.get_key_value(t) else { continue };
            if !w.index.contains_key(t) {
                visit(w, t);
                let low = w.low[v].min(w.low[t]);
                w.low.insert(v, low);
            } else if w.on_stack.contains(t) {
                let low = w.low[v].min(w.index[t]);
                w.low.insert(v, low);
            }
        }
        if w.low[v] == w.index[v] {
            let mut component = Vec::new();
            while let Some(t) = w.stack.pop() {
                w.on_stack.remove(t);
                component.push(t.clone());
                if t == v {
                    break;
                }
            }
            if component.len() > 1 {
                w.found.push(component);
            }
        }
    }
    let mut w = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !w.index.contains_key(v) {
            visit(&mut w, v);
        }
    }
    w.found
}

#[test]
fn the_module_graph_has_no_circle() {
    let edges = graph();
    let report: Vec<String> = circles(&edges)
        .iter()
        .map(|component| {
            let set: BTreeSet<&Module> = component.iter().collect();
            let arrows: Vec<String> = component
                .iter()
                .flat_map(|a| {
                    edges[a].iter().filter(|b| set.contains(b)).map(move |b| format!("{} -> {}", name(a), name(b)))
                })
                .collect();
            format!("circle: {}", arrows.join(", "))
        })
        .collect();
    assert!(report.is_empty(), "{}", report.join("\n"));
}

#[test]
fn the_checker_sees_a_circle_between_a_room_and_its_front() {
    // The rule's own proof: a front that uses a child which uses the front is reported.
    let front: Module = vec!["room".into()];
    let child: Module = vec!["room".into(), "child".into()];
    let edges = BTreeMap::from([(front.clone(), BTreeSet::from([child.clone()])), (child, BTreeSet::from([front]))]);
    assert_eq!(circles(&edges).len(), 1);
    let modules: BTreeMap<Module, PathBuf> = [vec![], vec!["room".to_string()], vec!["room".into(), "child".into()]]
        .into_iter()
        .map(|m| (m, PathBuf::new()))
        .collect();
    let code = code_only(
        "use super::{Thing, other::X};\n// crate::room::child in a comment\nlet s = \"crate::room\"; child::f();",
    );
    let found: BTreeSet<Module> =
        paths(&code).iter().filter_map(|p| resolve(&vec!["room".to_string()], p, &modules)).collect();
    assert_eq!(found, BTreeSet::from([vec![], vec!["room".to_string(), "child".into()]]));
    // A path serde calls, written as a string, is a dependency too.
    let attr = attribute_paths("    #[serde(default, skip_serializing_if = \"super::is_false\")]\n");
    assert_eq!(attr, vec![vec!["super".to_string(), "is_false".into()]]);
}

#[test]
fn no_command_imports_another() {
    let edges = graph();
    let command = |m: &Module| m.len() == 2 && m[0] == "commands" && m[1] != "context";
    let found: Vec<String> = edges
        .iter()
        .filter(|(from, _)| command(from))
        .flat_map(|(from, to)| to.iter().filter(|t| command(t)).map(move |t| format!("{} -> {}", name(from), name(t))))
        .collect();
    assert!(found.is_empty(), "commands import each other: {found:?}");
}

#[test]
fn no_source_file_is_past_600_lines_before_its_tests() {
    let long: Vec<String> = modules()
        .values()
        .filter_map(|file| {
            let text = std::fs::read_to_string(file).unwrap();
            let lines = before_tests(&text).lines().count();
            (lines > LIMIT).then(|| format!("{} has {lines} lines before its tests", file.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these by responsibility:\n{}", long.join("\n"));
}
