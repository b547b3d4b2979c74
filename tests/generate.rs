//! `filebus man` and `filebus completions`: every manual page renders with
//! `man -l` without a warning, every completion script is valid for its shell
//! (and, where the shell can run it here, completes a subcommand), and
//! bad use fails like any other usage error.
//!
//! The checks need man-db, groff, zsh, fish, elvish and script(1); the test
//! command installs them (scripts/setup-tools.sh) and these tests fail, never
//! skip, when one is missing. PowerShell has no package here: its script is
//! only checked for the registration of the completer.
//!
//! No numbered promise (docs/reliability.md); what this checks is in the
//! Install section of the README and "Manual pages, completions and the
//! wheel" in docs/contributing.md.

mod common;

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::Spawn;
use common::{Scratch, ours, wait_exit};

fn filebus(args: &[&str]) -> Output {
    let out = ours().args(args).stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "filebus {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a checking tool, failing with a hint when it is not installed.
fn tool(program: &str) -> Command {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()));
    assert!(
        found,
        "{program} is not installed; scripts/setup-tools.sh installs the tools these tests need"
    );
    Command::new(program)
}

/// Renders a page as a reader would, with man's warnings enabled (its
/// `--warnings=all` reports nothing here) and with every groff warning;
/// returns the text and the warnings of `man -l` and of a strict groff run.
fn render(page: &[u8], what: &str) -> (String, String, String) {
    let s = Scratch::new();
    let file = s.path("page.1");
    fs::write(&file, page).unwrap();
    let mut man = tool("man");
    man.args(["--warnings", "-l"])
        .arg(&file)
        .env("MANWIDTH", "80")
        // man drops the formatter's warnings when not on a terminal, unless
        // told to keep them.
        .env("MAN_KEEP_STDERR", "1")
        .env("MANPAGER", "cat")
        .env("PAGER", "cat");
    let out = man.stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "man -l failed on {what}");
    let mut groff = tool("groff");
    groff.args(["-man", "-Tutf8", "-ww", "-z"]).arg(&file);
    let strict = groff.stdin(Stdio::null()).output().unwrap();
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        String::from_utf8_lossy(&strict.stderr).into_owned(),
    )
}

#[test]
fn the_warning_check_sees_a_broken_page() {
    let (_, man, groff) = render(
        b".TH BROKEN 1\n.SH NAME\nbroken \\- a page\n.XYZZY\n",
        "a broken page",
    );
    assert!(man.contains("macro 'XYZZY' not defined"), "man -l: {man:?}");
    assert!(
        groff.contains("macro 'XYZZY' not defined"),
        "groff: {groff:?}"
    );
}

#[test]
fn the_man_page_renders_without_warnings() {
    let page = filebus(&["man"]).stdout;
    let (text, man, groff) = render(&page, "filebus man");
    assert_eq!(
        (man.as_str(), groff.as_str()),
        ("", ""),
        "warnings rendering filebus(1)"
    );
    for expected in [
        "NAME",
        "filebus - A userspace multicast named pipe",
        "--back-pressure",
        "--block-size <N>",
        "filebus-producer(1)",
        "FILE.__new__",
        "EXIT STATUS",
        concat!("filebus ", env!("CARGO_PKG_VERSION")),
    ] {
        assert!(
            text.contains(expected),
            "filebus(1) lacks {expected:?}:\n{text}"
        );
    }
}

#[test]
fn man_dir_writes_one_page_per_command() {
    let s = Scratch::new();
    let dir = s.path("man1");
    fs::create_dir(&dir).unwrap();
    filebus(&["man", "--dir", dir.to_str().unwrap()]);
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "filebus-completions.1",
            "filebus-consumer.1",
            "filebus-man.1",
            "filebus-producer.1",
            "filebus-status.1",
            "filebus-unsubscribe.1",
            "filebus.1"
        ]
    );
    assert_eq!(
        fs::read(dir.join("filebus.1")).unwrap(),
        filebus(&["man"]).stdout
    );
    for name in &names {
        let (text, man, groff) = render(&fs::read(dir.join(name)).unwrap(), name);
        assert_eq!(
            (man.as_str(), groff.as_str()),
            ("", ""),
            "warnings rendering {name}"
        );
        let title = name.trim_end_matches(".1");
        let words = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            words.contains(&format!("NAME {title} - ")),
            "{name}:\n{text}"
        );
    }
    let producer = fs::read_to_string(dir.join("filebus-producer.1")).unwrap();
    assert!(producer.contains("retain") && producer.contains("filename"));
    // The commands that use no bus document none of its options.
    let man = fs::read_to_string(dir.join("filebus-man.1")).unwrap();
    assert!(man.contains("dir") && !man.contains("filename"), "{man}");
}

/// DIR may be shared (a sticky, world-writable directory): a symbolic link
/// or a hard link that someone planted under a page's name is replaced by
/// the page, never written through.
#[test]
fn man_dir_replaces_planted_links() {
    let s = Scratch::new();
    let dir = s.path("man1");
    fs::create_dir(&dir).unwrap();
    let (symlinked, hard_linked) = (s.path("victim-of-symlink"), s.path("victim-of-link"));
    fs::write(&symlinked, "precious\n").unwrap();
    fs::write(&hard_linked, "precious too\n").unwrap();
    std::os::unix::fs::symlink(&symlinked, dir.join("filebus.1")).unwrap();
    fs::hard_link(&hard_linked, dir.join("filebus-producer.1")).unwrap();
    filebus(&["man", "--dir", dir.to_str().unwrap()]);
    assert_eq!(fs::read_to_string(&symlinked).unwrap(), "precious\n");
    assert_eq!(fs::read_to_string(&hard_linked).unwrap(), "precious too\n");
    for name in ["filebus.1", "filebus-producer.1"] {
        let page = dir.join(name);
        assert!(fs::symlink_metadata(&page).unwrap().is_file(), "{name}");
        assert!(
            fs::read_to_string(&page).unwrap().contains(".TH "),
            "{name} is not a manual page"
        );
    }
    // No temporary file is left beside the pages.
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 7);
}

/// The SYNOPSIS of every page that uses a bus shows `--filename` as
/// required (it is, but clap knows it only as an optional global option),
/// and the pages of `status` and `unsubscribe` leave out the options that
/// mean nothing to them.
#[test]
fn synopses_show_the_data_file_as_required() {
    let s = Scratch::new();
    let dir = s.path("man1");
    fs::create_dir(&dir).unwrap();
    filebus(&["man", "--dir", dir.to_str().unwrap()]);
    let synopsis = |name: &str| {
        let page = fs::read_to_string(dir.join(name)).unwrap();
        let start = page.find(".SH SYNOPSIS\n").expect("a SYNOPSIS") + 13;
        let end = page[start..].find(".SH").unwrap() + start;
        (page[start..end].to_owned(), page)
    };
    let filename = r"\fB\-\-filename\fR";
    for name in [
        "filebus.1",
        "filebus-producer.1",
        "filebus-consumer.1",
        "filebus-status.1",
        "filebus-unsubscribe.1",
    ] {
        let (text, _) = synopsis(name);
        assert!(
            text.contains(filename) && !text.contains(&format!("[{filename}")),
            "{name}: {text}"
        );
    }
    for name in ["filebus-status.1", "filebus-unsubscribe.1"] {
        let (_, page) = synopsis(name);
        for foreign in [r"\-\-block\-size", r"\-\-lines", r"\-\-sleep", r"\-\-back"] {
            assert!(
                !page.contains(foreign),
                "{name} documents {foreign}:\n{page}"
            );
        }
    }
}

fn completion(shell: &str) -> (Scratch, PathBuf) {
    let s = Scratch::new();
    let script = s.path(&format!("filebus.{shell}"));
    fs::write(&script, filebus(&["completions", shell]).stdout).unwrap();
    (s, script)
}

fn check(mut cmd: Command, what: &str) -> String {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn bash_completion_is_valid_and_completes() {
    let (_s, script) = completion("bash");
    let mut syntax = tool("bash");
    syntax.arg("-n").arg(&script);
    check(syntax, "bash -n");
    let mut run = tool("bash");
    run.arg("-c")
        .arg(
            r#"source "$1"
            complete_words() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _filebus filebus "${@: -1}" "${@: -2:1}"; echo "${COMPREPLY[*]}"; }
            complete_words filebus pro
            complete_words filebus consumer --hi
            complete_words filebus man --"#,
        )
        .arg("bash")
        .arg(&script);
    let out = check(run, "bash completion");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "producer");
    assert_eq!(lines[1], "--history");
    assert_eq!(lines[2], "--dir --help", "man takes no bus option");
}

#[test]
fn zsh_completion_is_valid() {
    let (_s, script) = completion("zsh");
    let mut syntax = tool("zsh");
    syntax.arg("-n").arg(&script);
    check(syntax, "zsh -n");
    let mut load = tool("zsh");
    load.args(["-f", "-c"])
        .arg(r#"autoload -U compinit && compinit -u -D && source "$1" && (( $+functions[_filebus] )) && echo loaded"#)
        .arg("zsh")
        .arg(&script);
    assert_eq!(check(load, "zsh completion").trim(), "loaded");
}

#[test]
fn fish_completion_is_valid_and_completes() {
    let (_s, script) = completion("fish");
    let mut syntax = tool("fish");
    syntax.arg("--no-execute").arg(&script);
    check(syntax, "fish --no-execute");
    let mut run = tool("fish");
    run.arg("--no-config")
        .arg("-c")
        .arg(
            "source $argv[1]; complete -C'filebus pro'; complete -C'filebus consumer --po'; \
             echo ---; complete -C'filebus completions '",
        )
        .arg(&script);
    let out = check(run, "fish completion");
    let (options, shells) = out.split_once("---\n").unwrap();
    assert!(
        options.lines().any(|l| l.starts_with("producer\t")),
        "{out}"
    );
    assert!(
        options.lines().any(|l| l.starts_with("--position-file\t")),
        "{out}"
    );
    // The shells and nothing else: no file names.
    let offered: Vec<&str> = shells
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(
        offered,
        ["bash", "elvish", "fish", "powershell", "zsh"],
        "{out}"
    );
}

#[test]
fn elvish_completion_loads_and_completes() {
    let (s, script) = completion("elvish");
    // Elvish defines its completion hooks only in an interactive shell, so
    // the script runs as the rc file of one, in a pseudo-terminal.
    let rc = s.path("rc.elv");
    fs::write(
        &rc,
        format!(
            "{}\nfor c [($edit:completion:arg-completer[filebus] filebus pro)] {{ echo completes (repr $c) }}\nexit 0\n",
            fs::read_to_string(&script).unwrap()
        ),
    )
    .unwrap();
    tool("elvish");
    let transcript = s.path("transcript");
    let mut run = tool("script");
    run.args(["-qec"])
        .arg(format!("elvish -rc {}", rc.display()))
        .arg("/dev/null")
        .stdin(Stdio::null())
        .stdout(fs::File::create(&transcript).unwrap())
        .stderr(Stdio::inherit());
    // An error in the script leaves elvish at its prompt: the deadline ends it.
    let mut child = run.spawn_proc().unwrap();
    let status = wait_exit(&mut child, "elvish");
    let text = fs::read_to_string(&transcript).unwrap();
    assert!(status.success(), "elvish failed: {text}");
    assert!(
        text.contains("completes (edit:complex-candidate producer "),
        "elvish did not complete `producer`: {text}"
    );
}

#[test]
fn powershell_completion_registers_a_completer() {
    let (_s, script) = completion("powershell");
    let text = fs::read_to_string(script).unwrap();
    assert!(text.contains("Register-ArgumentCompleter -Native -CommandName 'filebus'"));
    assert!(text.contains("'filebus;producer'"), "{text}");
}

fn fails(args: &[&str], code: i32, says: &str) {
    let out = ours().args(args).stdin(Stdio::null()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    assert!(err.contains(says), "{args:?} should say {says:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_use_of_man_and_completions() {
    fails(&["completions"], 2, "<SHELL>");
    fails(&["completions", "tcsh"], 2, "invalid value 'tcsh'");
    fails(
        &["--filename", "x", "completions", "bash"],
        2,
        "filebus: --filename does not apply to `filebus completions`, which uses no bus",
    );
    fails(
        &["man", "--lossless"],
        2,
        "--back-pressure does not apply to `filebus man`",
    );
    fails(&["man", "-v"], 2, "--verbose does not apply");
    fails(
        &["man", "--dir", "/nonexistent/man1"],
        1,
        "filebus: /nonexistent/man1/filebus.1: ",
    );
    let out = ours()
        .args(["completions", "bash"])
        .stdout(
            fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap(),
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "filebus: cannot write to standard output: No space left on device (os error 28)\n"
    );
}

/// `filebus man >&-` must not "print" the page into the /dev/null that the
/// runtime puts in place of a closed descriptor and report success.
#[test]
fn closed_standard_output_is_an_error() {
    for args in [&["man"][..], &["completions", "bash"][..]] {
        let mut cmd = ours();
        cmd.args(args).stdin(Stdio::null());
        // SAFETY: close is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                nix::libc::close(1);
                Ok(())
            });
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(
            err, "filebus: standard output was closed when filebus started\n",
            "{args:?}"
        );
    }
}
