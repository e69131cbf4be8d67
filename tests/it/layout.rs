//! The house rules of the source layout, checked (issue 13): no file of `src/` over 600 lines, no
//! import cycle between modules, and no clap type past `settings`.
//!
//! The checks read the source as text. A small scanner blanks comments and string literals (so a
//! path in a doc comment or a message is not an import), cuts each file's test module, and follows
//! every `crate::…` and `super::…` path, grouped `use` trees included.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;

/// The longest a file of `src/` may be.
const MAX_LINES: usize = 600;

/// The clap types: only `src/cli.rs` and `src/settings/` may name them.
const CLAP_TYPES: [&str; 7] = [
    "RunArgs",
    "CollectArgs",
    "ConnectionArgs",
    "ManifestArgs",
    "ExpandArgs",
    "MergeArgs",
    "SimulateArgs",
];

/// The root module's name in the graph (`src/lib.rs`).
const ROOT: &str = "crate";

/// Every `.rs` file under `src/`, as (path relative to the repository, text), in path order.
fn sources() -> Vec<(String, String)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    let mut dirs = vec![root.join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(&root).unwrap();
                let relative = relative.to_string_lossy().replace('\\', "/");
                files.push((relative, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    files.sort();
    assert!(
        files.iter().any(|(p, _)| p == "src/lib.rs"),
        "src/lib.rs not found"
    );
    files
}

/// The module a file is (`src/x.rs` and `src/x/mod.rs`: `x`; `src/x/y.rs`: `x::y`), or `None`
/// for `src/main.rs`, the binary's root, which is outside the library's tree.
fn module_of(path: &str) -> Option<String> {
    let inner = path.strip_prefix("src/")?.strip_suffix(".rs")?;
    match inner {
        "lib" => Some(ROOT.to_string()),
        "main" => None,
        _ => Some(
            inner
                .strip_suffix("/mod")
                .unwrap_or(inner)
                .replace('/', "::"),
        ),
    }
}

/// `text` with comments and the contents of string and character literals replaced by spaces;
/// line ends are kept, so line numbers still hold.
fn code_only(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    // Blank `c[from..to]`, keeping line ends.
    let blank = |out: &mut String, from: usize, to: usize| {
        for &ch in &c[from..to.min(c.len())] {
            out.push(if ch == '\n' { '\n' } else { ' ' });
        }
    };
    let ident = |i: usize| i < c.len() && (c[i].is_alphanumeric() || c[i] == '_');
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            let end = (i..c.len()).find(|&j| c[j] == '\n').unwrap_or(c.len());
            blank(&mut out, i, end);
            i = end;
        } else if c[i] == '/' && next == Some('*') {
            // Block comments nest.
            let (mut depth, mut j) = (0, i);
            while j < c.len() {
                if c[j] == '/' && c.get(j + 1) == Some(&'*') {
                    depth += 1;
                    j += 2;
                } else if c[j] == '*' && c.get(j + 1) == Some(&'/') {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if c[i] == 'r' && (i == 0 || !ident(i - 1) || c[i - 1] == 'b') && {
            let hashes = (i + 1..c.len()).take_while(|&j| c[j] == '#').count();
            c.get(i + 1 + hashes) == Some(&'"')
        } {
            // A raw string: `r"…"`, `r#"…"#`, … (and `br…`).
            let hashes = (i + 1..c.len()).take_while(|&j| c[j] == '#').count();
            let open = i + 1 + hashes;
            let close = (open + 1..c.len())
                .find(|&j| c[j] == '"' && (1..=hashes).all(|k| c.get(j + k) == Some(&'#')))
                .map_or(c.len(), |j| j + 1 + hashes);
            out.push('r');
            blank(&mut out, i + 1, close);
            i = close;
        } else if c[i] == '"' {
            let mut j = i + 1;
            while j < c.len() && c[j] != '"' {
                j += if c[j] == '\\' { 2 } else { 1 };
            }
            out.push('"');
            blank(&mut out, i + 1, j);
            if j < c.len() {
                out.push('"');
            }
            i = j + 1;
        } else if c[i] == '\'' && (next == Some('\\') || c.get(i + 2) == Some(&'\'')) {
            // A character literal (`'x'`, `'\n'`, `'\''`); otherwise a lifetime or a label.
            let mut j = i + 1;
            while j < c.len() && c[j] != '\'' {
                j += if c[j] == '\\' { 2 } else { 1 };
            }
            out.push('\'');
            blank(&mut out, i + 1, j);
            if j < c.len() {
                out.push('\'');
            }
            i = j + 1;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// `code` without its unit tests: cut at the first line `#[cfg(test)]` followed by `mod tests`
/// (the house places them at the bottom of the file).
fn without_tests(code: &str) -> &str {
    let mut offset = 0;
    let mut lines = code.split_inclusive('\n').peekable();
    while let Some(line) = lines.next() {
        if line.trim_end() == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod tests"))
        {
            return &code[..offset];
        }
        offset += line.len();
    }
    code
}

fn is_ident(ch: char) -> bool {
    ch.is_alphanumeric() || ch == '_'
}

/// Skip whitespace.
fn ws(s: &str) -> &str {
    s.trim_start()
}

/// Parse the use tree (or plain path) at the start of `s`, after a prefix already read; push
/// every path it names to `out`. Returns what follows it.
///
/// `a::b::c` names `prefix::a::b::c`; `a::{b, c::{d, e}}` names `prefix::a::b`,
/// `prefix::a::c::d` and `prefix::a::c::e`; whatever ends a path (`*`, `as`, `(`, `::<`, `;`)
/// ends it.
fn use_tree<'a>(mut s: &'a str, mut prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> &'a str {
    loop {
        s = ws(s);
        if let Some(group) = s.strip_prefix('{') {
            s = group;
            loop {
                s = ws(use_tree(s, prefix.clone(), out));
                if let Some(rest) = s.strip_prefix(',') {
                    s = rest;
                } else {
                    return s.strip_prefix('}').unwrap_or(s);
                }
                if let Some(rest) = ws(s).strip_prefix('}') {
                    // A trailing comma.
                    return rest;
                }
            }
        }
        let len = s.find(|ch: char| !is_ident(ch)).unwrap_or(s.len());
        if len == 0 {
            out.push(prefix);
            return s;
        }
        prefix.push(s[..len].to_string());
        s = &s[len..];
        match ws(s).strip_prefix("::") {
            Some(rest) => s = rest,
            None => {
                out.push(prefix);
                return s;
            }
        }
    }
}

/// Every module path a file's code names, with the 1-based line where it starts: `crate::…`
/// from the root, `super::…` (repeated as needed) from the parent of `module`. Paths are
/// segments after `crate`: `["journal", "Prior"]`.
fn paths_named(module: &str, code: &str) -> Vec<(usize, Vec<String>)> {
    let segments: Vec<&str> = if module == ROOT {
        vec![]
    } else {
        module.split("::").collect()
    };
    let mut found = Vec::new();
    for keyword in ["crate::", "super::"] {
        for (at, _) in code.match_indices(keyword) {
            let before = code[..at].chars().next_back();
            // Part of a longer name, or a later `super::` of a chain read from its first.
            if before.is_some_and(|ch| is_ident(ch) || ch == ':') {
                continue;
            }
            let mut rest = &code[at + keyword.len()..];
            let mut prefix: Vec<String> = Vec::new();
            if keyword == "super::" {
                let mut up = 1;
                while let Some(r) = ws(rest).strip_prefix("super::") {
                    up += 1;
                    rest = r;
                }
                let keep = segments.len().saturating_sub(up);
                prefix = segments[..keep].iter().map(|s| s.to_string()).collect();
            }
            let mut paths = Vec::new();
            use_tree(rest, prefix, &mut paths);
            let line = code[..at].matches('\n').count() + 1;
            found.extend(paths.into_iter().map(|p| (line, p)));
        }
    }
    found
}

/// The deepest module of `modules` a path names (`journal::Prior` → `journal`), or the root.
fn resolve(modules: &BTreeSet<String>, path: &[String]) -> String {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|m| modules.contains(m))
        .unwrap_or_else(|| ROOT.to_string())
}

/// Whether `a` is `b`, or one is the other's ancestor (the root is everyone's).
fn related(a: &str, b: &str) -> bool {
    a == b
        || a == ROOT
        || b == ROOT
        || a.starts_with(&format!("{b}::"))
        || b.starts_with(&format!("{a}::"))
}

/// Where an edge comes from: the file, the line number and the line.
#[derive(Debug, Clone)]
struct Origin {
    file: String,
    line: usize,
    text: String,
}

/// The module graph of `files` (path, text): for each edge, where it is first made. Edges
/// between a module and itself, its ancestors or its descendants are left out.
fn module_graph(files: &[(String, String)]) -> BTreeMap<(String, String), Origin> {
    let modules: BTreeSet<String> = files.iter().filter_map(|(p, _)| module_of(p)).collect();
    let mut edges = BTreeMap::new();
    for (path, text) in files {
        let Some(from) = module_of(path) else {
            continue;
        };
        let code = code_only(text);
        for (line, named) in paths_named(&from, without_tests(&code)) {
            let to = resolve(&modules, &named);
            if related(&from, &to) {
                continue;
            }
            edges.entry((from.clone(), to)).or_insert_with(|| Origin {
                file: path.clone(),
                line,
                text: text.lines().nth(line - 1).unwrap_or("").trim().to_string(),
            });
        }
    }
    edges
}

/// Every cycle of the graph through one of its edges: for each edge `a -> b`, a shortest path
/// back from `b` to `a`, as `[a, b, …, a]`, rotated to start at its least module and
/// deduplicated.
fn cycles(edges: &BTreeMap<(String, String), Origin>) -> BTreeSet<Vec<String>> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in edges.keys() {
        next.entry(a).or_default().push(b);
    }
    let mut found = BTreeSet::new();
    for (a, b) in edges.keys() {
        // Breadth first from `b`; `back` is the predecessor of each module reached.
        let mut back: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = VecDeque::from([b.as_str()]);
        while let Some(m) = queue.pop_front() {
            if m == a {
                break;
            }
            for &n in next.get(m).into_iter().flatten() {
                if n != b && !back.contains_key(n) {
                    back.insert(n, m);
                    queue.push_back(n);
                }
            }
        }
        if !back.contains_key(a.as_str()) {
            continue;
        }
        // From `a` back to `b`, then turned around: b, …, a.
        let mut path = vec![a.as_str()];
        let mut m = a.as_str();
        while m != b {
            m = back[m];
            path.push(m);
        }
        path.reverse();
        // a -> b -> … (without the closing a).
        let mut cycle: Vec<String> = std::iter::once(a.as_str())
            .chain(path)
            .map(str::to_string)
            .collect();
        cycle.pop();
        let least = (0..cycle.len()).min_by_key(|&i| &cycle[i]).unwrap();
        cycle.rotate_left(least);
        cycle.push(cycle[0].clone());
        found.insert(cycle);
    }
    found
}

/// The cycles of `edges`, each as `a -> b -> a` and the line that makes each of its edges.
fn describe(edges: &BTreeMap<(String, String), Origin>) -> Vec<String> {
    cycles(edges)
        .into_iter()
        .map(|cycle| {
            let mut text = cycle.join(" -> ");
            for pair in cycle.windows(2) {
                let o = &edges[&(pair[0].clone(), pair[1].clone())];
                text += &format!(
                    "\n    {} -> {}: {}:{}: {}",
                    pair[0], pair[1], o.file, o.line, o.text
                );
            }
            text
        })
        .collect()
}

#[test]
fn no_source_file_is_over_600_lines() {
    let long: Vec<String> = sources()
        .into_iter()
        .map(|(path, text)| (path, text.lines().count()))
        .filter(|(_, n)| *n > MAX_LINES)
        .map(|(path, n)| format!("{path}: {n} lines"))
        .collect();
    assert!(
        long.is_empty(),
        "{} files of src/ are over {MAX_LINES} lines (split them):\n{}",
        long.len(),
        long.join("\n")
    );
}

#[test]
fn no_import_cycle_between_modules() {
    let files = sources();
    let edges = module_graph(&files);
    // The scanner must see the layout's known imports, or it would find no cycle by finding
    // nothing at all.
    for (from, to) in [("pipeline", "journal"), ("commands::run", "pipeline")] {
        assert!(
            edges.contains_key(&(from.to_string(), to.to_string())),
            "the scanner missed the import {from} -> {to}"
        );
    }
    let found = describe(&edges);
    assert!(
        found.is_empty(),
        "{} import cycles between modules (each edge with the line that makes it):\n{}",
        found.len(),
        found.join("\n")
    );
}

#[test]
fn nothing_past_settings_sees_a_clap_type() {
    let mut seen = Vec::new();
    for (path, text) in sources() {
        if path == "src/cli.rs" || path.starts_with("src/settings/") {
            continue;
        }
        for (n, line) in code_only(&text).lines().enumerate() {
            let words: BTreeSet<&str> = line.split(|ch: char| !is_ident(ch)).collect();
            for ty in CLAP_TYPES.iter().filter(|t| words.contains(*t)) {
                seen.push(format!(
                    "{path}:{}: {ty}: {}",
                    n + 1,
                    text.lines().nth(n).unwrap_or("").trim()
                ));
            }
        }
    }
    assert!(
        seen.is_empty(),
        "clap types past src/cli.rs and src/settings/ (give the code settings instead):\n{}",
        seen.join("\n")
    );
}

/// The scanner on a made-up crate: what it must see, and what it must not.
#[test]
fn the_layout_scanner_reads_paths_as_the_rules_need() {
    let file = |path: &str, text: &str| (path.to_string(), text.to_string());
    let files = [
        file("src/lib.rs", "pub mod a;\npub mod b;\npub mod c;\n"),
        file(
            "src/a/mod.rs",
            "//! See crate::c, which is not an import.\npub mod inner;\nuse crate::{b::{self, Thing}, a::inner::X};\nfn f() { let s = \"crate::c::f()\"; let c = '\"'; crate::b::g(); }\n",
        ),
        file(
            "src/a/inner.rs",
            "use super::super::c::Y;\nuse super::Z;\n/* crate::b */\n#[cfg(test)]\nmod tests {\n    use crate::c;\n}\n",
        ),
        file(
            "src/b.rs",
            "fn g<'a>(x: &'a str) { let r = r#\"crate::c\"#; }\npub(crate) fn h() { crate::a::inner::run::<u8>(); }\n",
        ),
        file("src/c.rs", "use crate::a::f;\n"),
        file("src/main.rs", "use hidream_batch::c;\n"),
    ];
    let edges = module_graph(&files);
    let keys: Vec<String> = edges.keys().map(|(a, b)| format!("{a} -> {b}")).collect();
    assert_eq!(
        keys,
        ["a -> b", "a::inner -> c", "b -> a::inner", "c -> a"],
        "{edges:#?}"
    );
    assert_eq!(edges[&("a".into(), "b".into())].line, 3);
    // One cycle, found from each of its four edges; `a::inner -> a` (`super::Z`) is no edge.
    let found = describe(&edges);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].starts_with("a -> b -> a::inner -> c -> a\n"),
        "{found:#?}"
    );
    assert!(
        found[0].contains("src/c.rs:1: use crate::a::f;"),
        "{found:#?}"
    );
    assert_eq!(without_tests("a\n#[cfg(test)]\nmod tests {}\n"), "a\n");
    // On the real source, no literal or comment runs away with the code after it: every `use`
    // line is left as it is.
    for (path, text) in sources() {
        let code = code_only(&text);
        assert_eq!(code.lines().count(), text.lines().count(), "{path}");
        for (n, (line, kept)) in text.lines().zip(code.lines()).enumerate() {
            if line.starts_with("use ") && !line.contains("//") {
                assert_eq!(kept, line, "{path}:{}", n + 1);
            }
        }
    }
    assert_eq!(module_of("src/x/y/mod.rs").as_deref(), Some("x::y"));
}
