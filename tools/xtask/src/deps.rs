//! `cargo xtask deps`: the module graph of each crate, read from its sources, must have no
//! cycle (no module imports one that imports it back), and no module under
//! `core/src/kernels/generic` may import an architecture module.
//!
//! A module is a file (`a.rs`, or a folder's `a/mod.rs`); items and inline modules inside a
//! file count for that file. A file imports the module that a path names when the path starts
//! with `crate::`, `super::`, `self::` or a child module of the file (`mod x;` then `x::`),
//! in a `use` or anywhere in the code. The path names the longest chain of its segments that
//! is a module; when the rest starts with a name that module re-exports (`pub use a::Name`,
//! `use` counts too), the import follows it to the module that defines the name, so
//! `crate::Error` from `pub use error::Error` in lib.rs is an import of `error`. Paths
//! through a name brought in by `use` (`use crate::a; a::b::f()`) count for `a` only, and
//! glob imports (`use a::*`) for the module they open.
//!
//! Good enough to keep a layout honest, not a compiler: macros are read as text, `#[path]`
//! and `cfg` are ignored (every file counts, whatever it is built for).

use crate::util::{Res, workspace_root};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Source folders of the crates checked (each holds `lib.rs` or `main.rs`).
pub const CRATES: &[&str] = &[
    "core/src",
    "tools/cli/src",
    "tools/xtask/src",
    "tests/src",
    "tests/fixtures/src",
];

/// Modules under `kernels::generic` must not import a module `kernels::<arch>…` whose name
/// starts with one of these.
const ARCH_PREFIXES: &[&str] = &["x86", "wasm", "arm", "aarch64", "riscv"];

/// A module path inside its crate: `[]` is the crate root, `["kernels", "generic"]` is
/// `crate::kernels::generic`.
type ModPath = Vec<String>;

/// One import edge and where it was first seen.
#[derive(Clone, Debug)]
struct Edge {
    to: ModPath,
    /// `file:line` of the first path that made the edge.
    at: String,
}

/// The modules of one crate and what each imports.
#[derive(Debug, Default)]
pub struct Graph {
    /// Every module, with its file (relative to the crate's source folder).
    files: BTreeMap<ModPath, String>,
    /// Imports of each module, one edge per imported module.
    edges: BTreeMap<ModPath, Vec<Edge>>,
}

/// Lexical tokens of Rust source, comments, strings and characters dropped.
#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    Sep,
    Punct(char),
}

fn tokens(src: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    // Skips a string body from the char after the opening quote; returns the index after
    // the closing one (`hashes` for raw strings).
    let skip_string = |mut i: usize, raw: bool, hashes: usize, line: &mut usize| {
        while i < c.len() {
            match c[i] {
                '\n' => *line += 1,
                '\\' if !raw => i += 1,
                '"' if c[i + 1..]
                    .iter()
                    .take(hashes)
                    .filter(|&&h| h == '#')
                    .count()
                    == hashes =>
                {
                    return i + 1 + hashes;
                }
                _ => {}
            }
            i += 1;
        }
        i
    };
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if ch == '"' {
            i = skip_string(i + 1, false, 0, &mut line);
        } else if ch == '\'' {
            // A char literal ('a', '\n', '\u{1F600}') or a lifetime ('a).
            if c.get(i + 1) == Some(&'\\') {
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if ch.is_alphanumeric() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let raw = matches!(word.as_str(), "r" | "br" | "cr");
            let hashes = c[i..].iter().take_while(|&&h| h == '#').count();
            // `r"..."`, `r#"..."#` (not the raw identifier `r#type`).
            if raw && c.get(i + hashes) == Some(&'"') {
                i = skip_string(i + hashes + 1, true, hashes, &mut line);
            } else if matches!(word.as_str(), "b" | "c") && c.get(i) == Some(&'"') {
                i = skip_string(i + 1, false, 0, &mut line);
            } else if word == "b" && c.get(i) == Some(&'\'') {
                // Byte literal: let the char-literal branch take it.
            } else if !word.starts_with(|d: char| d.is_ascii_digit()) {
                out.push((Tok::Ident(word), line));
            }
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            out.push((Tok::Sep, line));
            i += 2;
        } else {
            out.push((Tok::Punct(ch), line));
            i += 1;
        }
    }
    out
}

/// The module path of a file inside the source folder (`None` for a file of another crate
/// root, such as `bin/*.rs`, or `main.rs` next to `lib.rs`).
fn mod_path(rel: &str, has_lib: bool) -> Option<ModPath> {
    let rel = rel.strip_suffix(".rs")?;
    let mut segs: Vec<String> = rel.split('/').map(String::from).collect();
    match segs.as_slice() {
        [one] if one == "lib" => return Some(Vec::new()),
        [one] if one == "main" => return (!has_lib).then(Vec::new),
        [first, ..] if first == "bin" => return None,
        _ => {}
    }
    if segs.last().is_some_and(|s| s == "mod") {
        segs.pop();
    }
    Some(segs)
}

/// A `crate`/`super`/`self`/child path as written, and where.
struct RawPath {
    segs: Vec<String>,
    /// Names of the inline modules (`mod tests { .. }`) the path stands in.
    inline: Vec<String>,
    line: usize,
    /// The name this path brings into scope, when it is a `use` at file level.
    alias: Option<String>,
}

/// Reads one path (or `use` tree) starting at `toks[i]`; pushes every full path it names
/// (with the alias it binds when `is_use`) and returns the index after it.
fn read_tree(
    toks: &[(Tok, usize)],
    mut i: usize,
    prefix: &[String],
    out: &mut Vec<(Vec<String>, Option<String>)>,
) -> usize {
    let mut segs = prefix.to_vec();
    loop {
        match toks.get(i) {
            Some((Tok::Ident(w), _)) if w == "self" && !prefix.is_empty() && segs == prefix => {
                // `{self, ..}`: the prefix module itself.
                i += 1;
                let alias = alias_after(toks, &mut i).or_else(|| segs.last().cloned());
                out.push((segs, alias));
                return i;
            }
            Some((Tok::Ident(w), _)) => {
                segs.push(w.clone());
                i += 1;
            }
            Some((Tok::Punct('{'), _)) => {
                i += 1;
                while let Some((t, _)) = toks.get(i) {
                    match t {
                        Tok::Punct('}') => {
                            i += 1;
                            break;
                        }
                        Tok::Punct(',') => i += 1,
                        _ => {
                            let before = i;
                            i = read_tree(toks, i, &segs, out);
                            if i == before {
                                i += 1;
                            }
                        }
                    }
                }
                return i;
            }
            Some((Tok::Punct('*'), _)) => {
                out.push((segs, None));
                return i + 1;
            }
            _ => break,
        }
        if toks.get(i).map(|t| &t.0) == Some(&Tok::Sep) {
            i += 1;
        } else {
            break;
        }
    }
    if segs.len() > prefix.len() {
        let alias = alias_after(toks, &mut i).or_else(|| segs.last().cloned());
        out.push((segs, alias));
    }
    i
}

/// `as name` at `toks[*i]`: skips it and returns the name.
fn alias_after(toks: &[(Tok, usize)], i: &mut usize) -> Option<String> {
    match (toks.get(*i), toks.get(*i + 1)) {
        (Some((Tok::Ident(a), _)), Some((Tok::Ident(n), _))) if a == "as" => {
            *i += 2;
            Some(n.clone())
        }
        _ => None,
    }
}

/// Every path of one file that starts at `crate`, `super`, `self` or one of `children`.
fn raw_paths(src: &str, children: &BTreeSet<String>) -> Vec<RawPath> {
    let toks = tokens(src);
    let mut out = Vec::new();
    // Inline modules: (name, brace depth inside them).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < toks.len() {
        let prev = i.checked_sub(1).map(|p| &toks[p].0);
        match &toks[i].0 {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Tok::Ident(w) if w == "mod" => {
                if let (Some((Tok::Ident(name), _)), Some((Tok::Punct('{'), _))) =
                    (toks.get(i + 1), toks.get(i + 2))
                {
                    inline.push((name.clone(), depth + 1));
                }
            }
            Tok::Ident(w) => {
                let is_use = matches!(prev, Some(Tok::Ident(u)) if u == "use");
                let starts = matches!(w.as_str(), "crate" | "super" | "self")
                    || (inline.is_empty() && children.contains(w));
                // `a::crate_name::..` continues another path; `$crate::` starts one.
                let continues = prev == Some(&Tok::Sep);
                if starts && !continues && toks.get(i + 1).map(|t| &t.0) == Some(&Tok::Sep) {
                    let line = toks[i].1;
                    let mut found = Vec::new();
                    let next = read_tree(&toks, i, &[], &mut found);
                    let names: Vec<String> = inline.iter().map(|(n, _)| n.clone()).collect();
                    for (segs, alias) in found {
                        out.push(RawPath {
                            segs,
                            inline: names.clone(),
                            line,
                            alias: if is_use && inline.is_empty() {
                                alias
                            } else {
                                None
                            },
                        });
                    }
                    i = next.max(i + 1);
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

impl Graph {
    /// Builds the graph of one crate from `(path relative to its source folder, text)`.
    pub fn from_sources(files: &[(String, String)]) -> Graph {
        let has_lib = files.iter().any(|(p, _)| p == "lib.rs");
        let mods: Vec<(ModPath, &str, &str)> = files
            .iter()
            .filter_map(|(p, s)| Some((mod_path(p, has_lib)?, p.as_str(), s.as_str())))
            .collect();
        let known: BTreeSet<ModPath> = mods.iter().map(|(m, _, _)| m.clone()).collect();
        // Pass 1: the absolute path of every file-level `use`, by module and bound name.
        let mut aliases: BTreeMap<ModPath, BTreeMap<String, Vec<String>>> = BTreeMap::new();
        let mut paths = Vec::new();
        for (m, file, src) in &mods {
            let children: BTreeSet<String> = known
                .iter()
                .filter(|k| k.len() == m.len() + 1 && k.starts_with(m))
                .map(|k| k[m.len()].clone())
                .collect();
            for raw in raw_paths(src, &children) {
                let Some(abs) = absolute(m, &raw) else {
                    continue;
                };
                if let Some(a) = &raw.alias {
                    aliases
                        .entry(m.clone())
                        .or_default()
                        .insert(a.clone(), abs.clone());
                }
                paths.push((m.clone(), abs, format!("{file}:{}", raw.line)));
            }
        }
        // Pass 2: resolve each path to the module that defines what it names.
        let mut g = Graph {
            files: mods
                .iter()
                .map(|(m, f, _)| (m.clone(), f.to_string()))
                .collect(),
            edges: BTreeMap::new(),
        };
        for (from, abs, at) in paths {
            let to = resolve(&known, &aliases, abs, 0);
            if to == from {
                continue;
            }
            let edges = g.edges.entry(from).or_default();
            if !edges.iter().any(|e| e.to == to) {
                edges.push(Edge { to, at });
            }
        }
        g
    }

    /// Reads every `.rs` file below `src_dir`.
    pub fn from_dir(src_dir: &Path) -> Res<Graph> {
        let mut files = Vec::new();
        let mut stack = vec![src_dir.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let rd = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            for entry in rd {
                let p = entry.map_err(|e| e.to_string())?.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|e| e == "rs") {
                    let rel = p.strip_prefix(src_dir).map_err(|e| e.to_string())?;
                    let rel = rel.to_string_lossy().replace('\\', "/");
                    let text =
                        std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                    files.push((rel, text));
                }
            }
        }
        files.sort();
        Ok(Graph::from_sources(&files))
    }

    /// The number of modules and of import edges.
    pub fn size(&self) -> (usize, usize) {
        (self.files.len(), self.edges.values().map(Vec::len).sum())
    }

    /// Every set of modules that import each other in a ring (strongly connected components
    /// with more than one module), each with the edges inside it.
    pub fn cycles(&self) -> Vec<String> {
        let nodes: Vec<&ModPath> = self.files.keys().collect();
        let index: BTreeMap<&ModPath, usize> =
            nodes.iter().enumerate().map(|(i, m)| (*m, i)).collect();
        let succ: Vec<Vec<usize>> = nodes
            .iter()
            .map(|m| {
                self.edges
                    .get(*m)
                    .into_iter()
                    .flatten()
                    .filter_map(|e| index.get(&e.to).copied())
                    .collect()
            })
            .collect();
        let mut out = Vec::new();
        for comp in sccs(&succ) {
            if comp.len() < 2 {
                continue;
            }
            let members: BTreeSet<usize> = comp.iter().copied().collect();
            let mut lines = vec![format!(
                "cycle among {}:",
                comp.iter()
                    .map(|&n| self.files[nodes[n]].as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )];
            for &n in &comp {
                for e in self.edges.get(nodes[n]).into_iter().flatten() {
                    if index.get(&e.to).is_some_and(|t| members.contains(t)) {
                        lines.push(format!(
                            "    {} -> {} ({})",
                            name(nodes[n]),
                            name(&e.to),
                            e.at
                        ));
                    }
                }
            }
            out.push(lines.join("\n"));
        }
        out
    }

    /// Imports of an architecture module by a module under `kernels::generic`.
    pub fn generic_imports_arch(&self) -> Vec<String> {
        let in_generic = |m: &ModPath| m.len() >= 2 && m[0] == "kernels" && m[1] == "generic";
        let is_arch = |m: &ModPath| {
            m.len() >= 2 && m[0] == "kernels" && ARCH_PREFIXES.iter().any(|a| m[1].starts_with(a))
        };
        let mut out = Vec::new();
        for (from, edges) in &self.edges {
            if !in_generic(from) {
                continue;
            }
            for e in edges.iter().filter(|e| is_arch(&e.to)) {
                out.push(format!(
                    "{} imports the arch module {} ({})",
                    name(from),
                    name(&e.to),
                    e.at
                ));
            }
        }
        out
    }
}

fn name(m: &ModPath) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        format!("crate::{}", m.join("::"))
    }
}

/// The path from the crate root that `raw` spells in module `m` (`None` when `super` goes
/// above the root).
fn absolute(m: &ModPath, raw: &RawPath) -> Option<Vec<String>> {
    let mut base: Vec<String> = m.iter().chain(&raw.inline).cloned().collect();
    let mut rest = raw.segs.as_slice();
    match rest.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &rest[1..];
        }
        Some("self") => rest = &rest[1..],
        Some("super") => {
            while rest.first().is_some_and(|s| s == "super") {
                base.pop()?;
                rest = &rest[1..];
            }
        }
        // A child module of the file: relative to the file, not to an inline module.
        _ => base.truncate(m.len()),
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// The module that defines what `abs` names: its longest module prefix, then through the
/// re-exports of that module.
fn resolve(
    known: &BTreeSet<ModPath>,
    aliases: &BTreeMap<ModPath, BTreeMap<String, Vec<String>>>,
    abs: Vec<String>,
    depth: usize,
) -> ModPath {
    let k = (0..=abs.len())
        .rev()
        .find(|&k| known.contains(&abs[..k]))
        .unwrap_or(0);
    let module = abs[..k].to_vec();
    if depth < 8
        && let Some(target) = abs.get(k).and_then(|n| aliases.get(&module)?.get(n))
    {
        let mut next = target.clone();
        next.extend(abs[k + 1..].iter().cloned());
        if next != abs {
            return resolve(known, aliases, next, depth + 1);
        }
    }
    module
}

/// Tarjan's strongly connected components of the graph `succ` (node -> successors).
fn sccs(succ: &[Vec<usize>]) -> Vec<Vec<usize>> {
    struct State<'a> {
        succ: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(s: &mut State, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for &w in &s.succ[v] {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack[w] = false;
                comp.push(w);
                if w == v {
                    break;
                }
            }
            comp.sort_unstable();
            s.out.push(comp);
        }
    }
    let n = succ.len();
    let mut s = State {
        succ,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    s.out
}

/// Checks every crate of [`CRATES`]; the error names every cycle and every arch import of
/// the generic kernels.
pub fn check() -> Res {
    let root = workspace_root();
    let mut problems = Vec::new();
    for dir in CRATES {
        let src = root.join(dir);
        if !src.is_dir() {
            continue;
        }
        let g = Graph::from_dir(&src)?;
        let (modules, edges) = g.size();
        println!("deps: {dir}: {modules} modules, {edges} imports");
        for p in g.cycles().into_iter().chain(g.generic_imports_arch()) {
            problems.push(format!("{dir}: {p}"));
        }
    }
    if problems.is_empty() {
        println!("deps: no cycles; the generic kernels import no arch module");
        Ok(())
    } else {
        for p in &problems {
            println!("{p}");
        }
        Err(format!(
            "{} module graph problem(s), listed above",
            problems.len()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(files: &[(&str, &str)]) -> Graph {
        let files: Vec<(String, String)> = files
            .iter()
            .map(|(p, s)| (p.to_string(), s.to_string()))
            .collect();
        Graph::from_sources(&files)
    }

    fn edges(g: &Graph) -> Vec<String> {
        let mut v: Vec<String> = g
            .edges
            .iter()
            .flat_map(|(f, es)| {
                es.iter()
                    .map(move |e| format!("{} -> {}", name(f), name(&e.to)))
            })
            .collect();
        v.sort();
        v
    }

    /// A tree without a cycle: the root re-exports, the kernels' mod.rs dispatches to its
    /// children, and the children use a sibling for their shared types. Comments, strings
    /// and inline test modules do not make imports.
    const ACYCLIC: &[(&str, &str)] = &[
        (
            "lib.rs",
            "mod error; pub mod kernels; pub use error::Error;\n\
             // crate::kernels::generic in a comment\n",
        ),
        ("error.rs", "pub enum Error { A }\n"),
        (
            "kernels/mod.rs",
            "mod args; pub mod generic; mod x86_64;\n\
             pub use args::Matrix;\n\
             pub fn run(m: Matrix) -> Result<(), crate::Error> {\n\
                 let _ = \"super::x86_64::fast\";\n\
                 generic::matmul(m); x86_64::matmul(m); Ok(())\n\
             }\n",
        ),
        ("kernels/args.rs", "pub struct Matrix;\n"),
        (
            "kernels/generic/mod.rs",
            "mod dot; use super::args::{self, Matrix as M};\n\
             pub fn matmul(_: M) { self::dot::dot() }\n\
             #[cfg(test)] mod tests { use super::*; use super::super::args::Matrix; }\n",
        ),
        ("kernels/generic/dot.rs", "pub fn dot() { let _ = 'x'; }\n"),
        (
            "kernels/x86_64.rs",
            "use crate::kernels::{args::Matrix, generic};\n\
             pub fn matmul(m: Matrix) { generic::matmul(m) }\n",
        ),
    ];

    #[test]
    fn an_acyclic_tree_has_no_cycle() {
        let g = graph(ACYCLIC);
        assert_eq!(
            edges(&g),
            [
                "crate -> crate::error",
                "crate::kernels -> crate::error",
                "crate::kernels -> crate::kernels::args",
                "crate::kernels -> crate::kernels::generic",
                "crate::kernels -> crate::kernels::x86_64",
                "crate::kernels::generic -> crate::kernels::args",
                "crate::kernels::generic -> crate::kernels::generic::dot",
                "crate::kernels::x86_64 -> crate::kernels::args",
                "crate::kernels::x86_64 -> crate::kernels::generic",
            ]
        );
        assert!(g.cycles().is_empty(), "{:?}", g.cycles());
        assert!(g.generic_imports_arch().is_empty());
    }

    #[test]
    fn a_cycle_and_an_arch_import_are_named() {
        let mut files = ACYCLIC.to_vec();
        // The reference kernel picks an overlay itself (generic -> dot -> x86_64 -> generic),
        // and the error type needs the kernels (kernels -> error -> kernels).
        files[5] = (
            "kernels/generic/dot.rs",
            "pub fn dot() { crate::kernels::x86_64::matmul(crate::kernels::Matrix) }\n",
        );
        files[1] = (
            "error.rs",
            "use crate::kernels::run;\npub enum Error { A }\n",
        );
        let g = graph(&files);
        let cycles = g.cycles();
        assert_eq!(cycles.len(), 2, "{cycles:?}");
        let named = |c: &str, files: &[&str]| files.iter().all(|f| c.contains(f));
        assert!(
            cycles
                .iter()
                .any(|c| named(c, &["error.rs", "kernels/mod.rs"])
                    && c.contains("crate::error -> crate::kernels (error.rs:1)")),
            "{cycles:?}"
        );
        assert!(
            cycles.iter().any(|c| named(
                c,
                &[
                    "kernels/generic/mod.rs",
                    "kernels/generic/dot.rs",
                    "kernels/x86_64.rs"
                ]
            )),
            "{cycles:?}"
        );
        assert_eq!(
            g.generic_imports_arch(),
            [
                "crate::kernels::generic::dot imports the arch module crate::kernels::x86_64 \
              (kernels/generic/dot.rs:1)"
            ]
        );
    }

    #[test]
    fn main_next_to_lib_and_bins_are_other_crates() {
        assert_eq!(mod_path("lib.rs", true), Some(vec![]));
        assert_eq!(mod_path("main.rs", true), None);
        assert_eq!(mod_path("main.rs", false), Some(vec![]));
        assert_eq!(mod_path("bin/heap.rs", true), None);
        assert_eq!(
            mod_path("a/b/mod.rs", true),
            Some(vec!["a".into(), "b".into()])
        );
    }
}
