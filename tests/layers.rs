//! The library's modules form layers that point one way: a module may use
//! modules of its own layer or below, never above, and no two modules may use
//! each other, directly or around a cycle. A cycle makes every module in it
//! depend on all the others, which is how a crate's structure starts to fight
//! change; this test fails on the first `use crate::` that would bring one
//! back.
//!
//! No numbered promise (docs/reliability.md); what this checks is in the
//! Layout section of docs/contributing.md.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Bottom to top. A module missing here fails the test, so a new module has
/// to be given its place.
const LAYERS: &[&[&str]] = &[
    &["error", "options", "paths", "files", "sys", "remote"],
    &[
        "lock", "stop", "watch", "output", "sink", "chunker", "progress", "shm_log", "sentinel",
    ],
    &["publish", "stream", "consume", "history", "status"],
    &["bus"],
];

/// The binary's modules, which sit above the library and are not checked.
const BINARY: &[&str] = &["main", "cli", "logger", "stdio", "generate"];

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|layer| layer.contains(&module))
        .unwrap_or_else(|| panic!("module `{module}` has no layer in tests/layers.rs"))
}

/// The names `lib.rs` re-exports at the crate root, with the module each
/// comes from: `crate::Error` is a use of `error`.
fn reexports(src: &Path) -> BTreeMap<String, String> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let mut names = BTreeMap::new();
    for statement in lib.split(';') {
        let Some(rest) = statement.trim().strip_prefix("pub use ") else {
            continue;
        };
        let (module, items) = rest.split_once("::").unwrap();
        for item in items.trim_matches(|c| c == '{' || c == '}').split(',') {
            let item = item.trim();
            if !item.is_empty() {
                names.insert(item.to_string(), module.to_string());
            }
        }
    }
    names
}

/// Each top-level library module and the modules it names through `crate::`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let reexported = reexports(&src);
    let resolve = |name: &str| reexported.get(name).cloned().unwrap_or(name.to_string());
    let mut graph = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&src).unwrap();
            let first = relative.components().next().unwrap();
            let module = Path::new(first.as_os_str())
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if module == "lib" || BINARY.contains(&module.as_str()) {
                continue;
            }
            // Comments may link anywhere: a doc link is not a dependency.
            let text: String = std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .filter(|line| !line.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            let used = graph.entry(module.clone()).or_insert_with(BTreeSet::new);
            for (at, _) in text.match_indices("crate::") {
                let name: String = text[at + "crate::".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let name = resolve(&name);
                if !name.is_empty() && name != module {
                    used.insert(name);
                }
            }
            // `use crate::{a, b}` names several at once.
            for (at, _) in text.match_indices("crate::{") {
                let rest = &text[at + "crate::{".len()..];
                let group = &rest[..rest.find('}').unwrap_or(rest.len())];
                for item in group.split(',') {
                    let name = resolve(item.trim().split("::").next().unwrap_or("").trim());
                    if !name.is_empty() && name != module {
                        used.insert(name);
                    }
                }
            }
        }
    }
    graph
}

#[test]
fn no_module_uses_one_above_it() {
    let mut wrong = Vec::new();
    for (module, used) in imports() {
        for other in used {
            if layer_of(&other) > layer_of(&module) {
                wrong.push(format!("{module} uses {other}, a layer above it"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn no_import_cycle() {
    let graph = imports();
    // Depth-first search; a module met again while still on the path closes
    // a cycle.
    fn visit(
        module: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if let Some(at) = path.iter().position(|m| m == module) {
            panic!("import cycle: {} -> {module}", path[at..].join(" -> "));
        }
        if !done.insert(module.to_string()) {
            return;
        }
        path.push(module.to_string());
        for next in graph.get(module).into_iter().flatten() {
            visit(next, graph, path, done);
        }
        path.pop();
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        visit(module, &graph, &mut Vec::new(), &mut done);
    }
}

/// Calls and constants that only Linux has. Outside `src/sys/` they would
/// break the build elsewhere or, worse, pass it and leave the portable path
/// unwalked; `scripts/test.sh` builds for FreeBSD and macOS, and this test
/// says where the offending line is without a cross build.
const LINUX_ONLY: &[&str] = &[
    "statx",
    "STATX_ATTR_APPEND",
    "STATX_ATTR_IMMUTABLE",
    "O_TMPFILE",
    "F_SETPIPE_SZ",
    "F_GETPIPE_SZ",
    "inotify::",
    "Inotify",
    "libc::splice",
    "fcntl::splice",
    "sendfile::",
    "RWF_NOWAIT",
    "pwritev2",
    "SO_MEMINFO",
    "SO_SNDBUFFORCE",
    "SO_DOMAIN",
    "O_DIRECT",
    "/proc/self/fd",
    "CapEff",
];

#[test]
fn linux_only_calls_stay_behind_the_platform_seam() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path == src.join("sys") {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap();
                for name in LINUX_ONLY.iter().filter(|name| mentions(code, name)) {
                    found.push(format!("{}:{}: {name}", path.display(), n + 1));
                }
            }
        }
    }
    assert!(found.is_empty(), "outside src/sys/:\n{}", found.join("\n"));
}

/// Whether `code` holds `name` not as part of a longer word (`O_DIRECT`
/// is not in `O_DIRECTORY`).
fn mentions(code: &str, name: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let (first, last) = (name.chars().next(), name.chars().next_back());
    code.match_indices(name).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = code[at + name.len()..].chars().next();
        let joined = |outer: Option<char>, inner: Option<char>| {
            outer.is_some_and(word) && inner.is_some_and(word)
        };
        !joined(before, first) && !joined(after, last)
    })
}
