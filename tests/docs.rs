//! The documentation as a reader meets it: every shell example of the
//! README and of the user guide runs as written, pasted in order into a
//! fresh shell with a fresh home, and prints what the text says; every
//! relative link and anchor in README.md and docs/ resolves. The README's
//! Rust examples are doctests (`src/lib.rs` includes README.md).
//!
//! No numbered promise (docs/reliability.md); what this checks is the
//! README and docs/guide.md themselves. The conventions the examples follow
//! are in docs/contributing.md, "Examples are tests":
//!
//! * a ```` ```sh ```` block runs with `bash -e` in the file's own
//!   directory, after the blocks before it, and must exit 0 within
//!   [`common::DEADLINE`]; its leftover background processes are killed;
//! * a ```` ```text output ```` block right after it is what it prints on
//!   standard output, line for line; `...` in a line stands for any text;
//! * a ```` ```sh norun ```` block is not run: [`NOT_RUN`] counts them, with
//!   the reason, so that none slips in unnoticed;
//! * paths under `/tmp/` are moved into the test's own directory (the
//!   examples use them so that a reader's terminals can share a bus), so
//!   that runs never meet.

mod common;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::Scratch;
use common::Spawn;

/// The files whose shell examples run.
const RUN: [&str; 2] = ["README.md", "docs/guide.md"];

/// The shell examples that do not run, per file, and why.
const NOT_RUN: [(&str, usize, &str); 2] = [
    (
        "README.md",
        3,
        "the test command (this test is part of it), and installing from source with cargo \
         and pip, which build a release binary (scripts/wheel.sh checks the pip install)",
    ),
    ("docs/guide.md", 0, ""),
];

/// The info strings a block may have: anything else would be shown
/// without highlighting, or, without one, compiled by rustdoc as Rust.
/// Python blocks need the module installed: python/tests/test_readme.py
/// runs them against the wheel (scripts/wheel.sh).
const KINDS: [&str; 8] = [
    "sh",
    "sh norun",
    "text",
    "text output",
    "rust",
    "python",
    "json",
    "toml",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A fenced block of a Markdown file.
#[derive(Debug)]
struct Block {
    info: String,
    body: String,
    /// The line of its opening fence, counted from 1.
    line: usize,
}

/// The fenced blocks of `text`.
fn blocks(text: &str) -> Vec<Block> {
    let mut found = Vec::new();
    let mut open: Option<Block> = None;
    for (n, line) in text.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut open, fence) {
            (None, Some(info)) => {
                open = Some(Block {
                    info: info.trim().to_owned(),
                    body: String::new(),
                    line: n + 1,
                })
            }
            (Some(_), Some("")) => found.extend(open.take()),
            (Some(block), _) => {
                block.body.push_str(line);
                block.body.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "a code block is never closed");
    found
}

/// Whether `actual` is `expected`, line for line, where `...` in an
/// expected line stands for any text.
fn matches(expected: &str, actual: &str) -> bool {
    let (expected, actual): (Vec<&str>, Vec<&str>) =
        (expected.lines().collect(), actual.lines().collect());
    expected.len() == actual.len()
        && expected.iter().zip(&actual).all(|(e, a)| {
            let parts: Vec<&str> = e.split("...").collect();
            let mut rest = *a;
            for (k, part) in parts.iter().enumerate() {
                if k == 0 {
                    let Some(after) = rest.strip_prefix(part) else {
                        return false;
                    };
                    rest = after;
                } else if k == parts.len() - 1 {
                    return rest.ends_with(part);
                } else {
                    let Some(at) = rest.find(part) else {
                        return false;
                    };
                    rest = &rest[at + part.len()..];
                }
            }
            rest.is_empty()
        })
}

/// Where a file's examples run: a working directory, a home of their own
/// and a /tmp of their own.
struct Shell {
    _scratch: Scratch,
    work: PathBuf,
    home: PathBuf,
    tmp: PathBuf,
    path: String,
}

impl Shell {
    /// `bin` first on PATH, then the system's.
    fn new(bin: &[PathBuf]) -> Shell {
        let scratch = Scratch::new();
        let [work, home, tmp] = ["work", "home", "tmp"].map(|d| scratch.path(d));
        for dir in [&work, &home, &tmp] {
            std::fs::create_dir(dir).unwrap();
        }
        let system = std::env::var("PATH").unwrap_or_default();
        let mut path: Vec<String> = bin.iter().map(|b| b.display().to_string()).collect();
        path.push(system);
        Shell {
            _scratch: scratch,
            work,
            home,
            tmp,
            path: path.join(":"),
        }
    }

    /// Runs `script` with `bash -e`; its standard output, or why it
    /// failed.
    fn run(&self, script: &str) -> Result<String, String> {
        let script = script.replace("/tmp/", &format!("{}/", self.tmp.display()));
        let mut bash = Command::new("bash");
        bash.arg("-e")
            .arg("-c")
            .arg(&script)
            .current_dir(&self.work)
            .env("HOME", &self.home)
            .env("PATH", &self.path)
            .env("TMPDIR", &self.tmp)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Its own process group, so that what it leaves running in the
        // background can be ended with it.
        let mut child = bash.spawn_group().map_err(|e| format!("bash: {e}"))?;
        let group = nix::unistd::Pid::from_raw(child.id() as i32);
        let read = |mut from: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = from.read_to_string(&mut text);
                text
            })
        };
        let stdout = read(Box::new(child.stdout.take().unwrap()));
        let stderr = read(Box::new(child.stderr.take().unwrap()));
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if start.elapsed() > common::DEADLINE {
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        // Background jobs hold the pipes open: they end with the example.
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait();
        let (out, err) = (stdout.join().unwrap(), stderr.join().unwrap());
        match status {
            Some(status) if status.success() => Ok(out),
            Some(status) => Err(format!("{status}\nstdout:\n{out}\nstderr:\n{err}")),
            None => Err(format!(
                "still running after {:?}\nstdout:\n{out}\nstderr:\n{err}",
                common::DEADLINE
            )),
        }
    }
}

/// Runs the examples of `text` (the file `name`) in `shell`, in order;
/// the number of blocks not run, or what went wrong.
fn run_examples(name: &str, text: &str, shell: &Shell) -> Result<usize, String> {
    let blocks = blocks(text);
    let mut not_run = 0;
    let mut last: Option<(usize, String)> = None;
    for block in &blocks {
        let at = format!("{name}:{}", block.line);
        if !KINDS.contains(&block.info.as_str()) {
            return Err(format!("{at}: a block of kind {:?}", block.info));
        }
        match block.info.as_str() {
            "sh" => {
                let out = shell
                    .run(&block.body)
                    .map_err(|e| format!("{at}: the example failed: {e}\n{}", block.body))?;
                last = Some((block.line, out));
            }
            "text output" => {
                let Some((line, out)) = last.take() else {
                    return Err(format!("{at}: output that follows no example"));
                };
                if !matches(&block.body, &out) {
                    return Err(format!(
                        "{name}:{line}: the example printed\n{out}\nbut {at} says\n{}",
                        block.body
                    ));
                }
            }
            "sh norun" => not_run += 1,
            _ => last = None,
        }
    }
    Ok(not_run)
}

/// The release build the README's commands expect: a copy of the binary
/// under test at `work/target/release/filebus`, and in `shim` a `cargo`
/// that accepts only `cargo build --release` and does nothing, that build
/// being done already.
fn release_build(work: &Path, shim: &Path) {
    std::fs::create_dir_all(work.join("target/release")).unwrap();
    std::fs::copy(
        assert_cmd::cargo::cargo_bin!("filebus"),
        work.join("target/release/filebus"),
    )
    .unwrap();
    std::fs::create_dir_all(shim).unwrap();
    let cargo = shim.join("cargo");
    std::fs::write(
        &cargo,
        "#!/bin/sh\n\
         # tests/docs.rs: target/release/filebus is the binary under test.\n\
         [ \"$1\" = build ] && [ \"$2\" = --release ] && exit 0\n\
         echo \"tests/docs.rs runs only 'cargo build --release', not: cargo $*\" >&2\n\
         exit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// README.md pasted in order: filebus is on PATH only once its Install
/// section put it into `~/.local/bin` (which its note adds to PATH).
#[test]
fn every_readme_example_works_as_written() {
    let scratch = Scratch::new();
    let shim = scratch.path("shim");
    let mut shell = Shell::new(&[]);
    let local_bin = shell.home.join(".local/bin");
    shell.path = format!("{}:{}:{}", local_bin.display(), shim.display(), shell.path);
    release_build(&shell.work, &shim);
    check_file("README.md", &shell);
}

/// docs/guide.md, with the binary under test on PATH.
#[test]
fn every_guide_example_works_as_written() {
    let scratch = Scratch::new();
    let bin = scratch.path("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::copy(
        assert_cmd::cargo::cargo_bin!("filebus"),
        bin.join("filebus"),
    )
    .unwrap();
    let shell = Shell::new(&[bin]);
    check_file("docs/guide.md", &shell);
}

fn check_file(name: &str, shell: &Shell) {
    assert!(RUN.contains(&name));
    let text = std::fs::read_to_string(root().join(name)).unwrap();
    let not_run = run_examples(name, &text, shell).unwrap_or_else(|e| panic!("{e}"));
    let (_, expected, why) = NOT_RUN.iter().find(|(n, ..)| *n == name).unwrap();
    assert_eq!(
        not_run, *expected,
        "{name}: {not_run} examples marked norun, {expected} expected ({why})"
    );
}

/// The checks themselves: an example that fails, one that prints
/// something else than its text says, a block of an unknown kind and a
/// broken link are each caught.
#[test]
fn the_checks_catch_what_they_are_for() {
    let shell = Shell::new(&[]);
    let ok = "```sh\necho 'one two'\n```\n\n```text output\none ...\n```\n";
    assert_eq!(run_examples("ok.md", ok, &shell), Ok(0));
    for (text, says) in [
        ("```sh\nfalse\necho unreached\n```\n", "the example failed"),
        ("```sh\necho one\n```\n```text output\ntwo\n```\n", "says"),
        ("```\nlet x = 1;\n```\n", "a block of kind \"\""),
        ("```text output\nx\n```\n", "follows no example"),
    ] {
        let err = run_examples("bad.md", text, &shell).unwrap_err();
        assert!(err.contains(says), "{text:?}: {err}");
    }
    // /tmp/ is the shell's own.
    let out = shell.run("echo x > /tmp/f && cat \"$TMPDIR/f\"").unwrap();
    assert_eq!(out, "x\n");
    let scratch = Scratch::new();
    let doc = scratch.path("a.md");
    std::fs::write(
        scratch.path("b.md"),
        "# Title\n## Second part, too\n```sh\n# not a heading\n```\n## Title\n",
    )
    .unwrap();
    for (link, broken) in [
        ("b.md", false),
        ("b.md#second-part-too", false),
        ("b.md#title-1", false),
        ("b.md#not-a-heading", true),
        ("#here", false),
        ("b.md#nowhere", true),
        ("c.md", true),
        ("#elsewhere", true),
    ] {
        std::fs::write(&doc, format!("# Here\n[x]({link}) and `[y](c.md)`\n")).unwrap();
        assert_eq!(broken_links(&doc).is_empty(), !broken, "{link}");
    }
}

/// GitHub's anchor for each heading: lower case, punctuation but `-` and
/// `_` dropped, spaces turned into `-`; a repeated one gets `-1`, `-2`, ...
fn anchors(text: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        }
        let Some(heading) = line.strip_prefix('#').filter(|_| !in_code) else {
            continue;
        };
        let slug: String = heading
            .trim_start_matches('#')
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let unique = (0..)
            .map(|n| match n {
                0 => slug.clone(),
                n => format!("{slug}-{n}"),
            })
            .find(|candidate| !found.contains(candidate))
            .unwrap();
        found.push(unique);
    }
    found
}

/// The relative links of the Markdown file `doc` (outside code) whose
/// file or anchor does not exist.
fn broken_links(doc: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(doc).unwrap();
    let mut broken = Vec::new();
    let mut in_code = false;
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        // Inline code is not a link.
        let prose: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        for (at, _) in prose.match_indices("](") {
            let rest = &prose[at + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = &rest[..end];
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
            let path = if file.is_empty() {
                doc.to_path_buf()
            } else {
                doc.parent().unwrap().join(file)
            };
            let ok = path.exists()
                && (anchor.is_empty()
                    || anchors(&std::fs::read_to_string(&path).unwrap_or_default())
                        .iter()
                        .any(|a| a == anchor));
            if !ok {
                broken.push(format!("{}:{}: {target}", doc.display(), n + 1));
            }
        }
    }
    broken
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let mut docs = vec![root().join("README.md"), root().join("BENCHMARKS.md")];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            docs.push(path);
        }
    }
    let broken: Vec<String> = docs.iter().flat_map(|d| broken_links(d)).collect();
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The README is read in five minutes: what filebus is, the set-up,
/// install and one example per mode; the depth lives in docs/.
#[test]
fn the_readme_stays_short() {
    let lines = std::fs::read_to_string(root().join("README.md"))
        .unwrap()
        .lines()
        .count();
    assert!(
        lines <= 300,
        "README.md has {lines} lines; move depth into docs/"
    );
}
