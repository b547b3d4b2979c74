//! `filebus completions` and `filebus man`: shell completion scripts and
//! manual pages generated from the clap definition in `cli.rs`, so that they
//! cannot drift from the options the command really accepts. Packagers run
//! them at build time; nothing here touches a bus.

use std::fs::File;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Subcommand, ValueEnum};
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};

use crate::cli::{Cli, Generate, applies, copy_bus_options};

/// Writes what was asked for; exits 1 with one line when it cannot.
pub fn run(what: Generate) -> ExitCode {
    let result = match what {
        Generate::Completions { shell } => {
            // clap_complete panics on a write error, so it writes into memory
            // and the error, if any, comes from writing that out.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut completed(), "filebus", &mut script);
            if shell == Shell::Fish {
                script.extend_from_slice(fish_shells().as_bytes());
            }
            write_stdout(&script)
        }
        Generate::Man { dir: None } => write_stdout(&main_page(&documented())),
        Generate::Man { dir: Some(dir) } => write_pages(&dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            crate::logger::stderr_line(format_args!("filebus: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// clap_complete's fish script offers no values for a positional argument,
/// so `filebus completions <TAB>` would offer file names: this line offers
/// the shells instead.
fn fish_shells() -> String {
    let shells: Vec<String> = Shell::value_variants()
        .iter()
        .filter_map(|shell| Some(shell.to_possible_value()?.get_name().to_owned()))
        .collect();
    format!(
        "complete -c filebus -n \"__fish_filebus_using_subcommand completions\" -f -a \"{}\"\n",
        shells.join(" ")
    )
}

/// The command as completion scripts see it. The generators offer hidden
/// options too, so instead of the global bus options of
/// [`Cli::definition`], the root and each subcommand get plain copies of
/// those that mean something to it: `completions` and `man`, which reject
/// them all, never offer one, nor `status` the producer's.
fn completed() -> clap::Command {
    let cmd = Generate::augment_subcommands(Cli::command());
    copy_bus_options(cmd, applies, |arg| arg).mut_args(|arg| arg.global(false))
}

/// The command as the manual describes it: every page documents `--help`,
/// so the `help` subcommand gets none of its own. `--filename` is required
/// by every command that uses a bus, which clap cannot say of a global
/// option (the parser checks it instead): the root and those commands get
/// required copies, so that each SYNOPSIS shows it without brackets.
/// Built, so that each subcommand knows its full name (`filebus-producer`).
fn documented() -> clap::Command {
    let cmd = Cli::definition().disable_help_subcommand(true);
    let filename = cmd
        .get_arguments()
        .find(|arg| arg.get_id() == "filename")
        .expect("--filename is defined")
        .clone()
        .global(false)
        .required(true);
    let with_filename =
        |cmd: clap::Command, sub: &str| cmd.mut_subcommand(sub, |s| s.arg(filename.clone()));
    let bus_commands: Vec<String> = cmd
        .get_subcommands()
        .filter(|sub| applies(sub.get_name(), &filename))
        .map(|sub| sub.get_name().to_owned())
        .collect();
    let cmd = cmd.mut_arg("filename", |_| filename.clone());
    let mut cmd = bus_commands
        .iter()
        .fold(cmd, |cmd, sub| with_filename(cmd, sub));
    cmd.build();
    cmd
}

fn manual(cmd: clap::Command) -> Man {
    Man::new(cmd)
        .source(concat!("filebus ", env!("CARGO_PKG_VERSION")))
        .manual("User Commands")
}

/// filebus(1): clap's sections plus the files on the bus and the exit status,
/// which a script calling filebus needs and `--help` does not show.
fn main_page(cmd: &clap::Command) -> Vec<u8> {
    let man = manual(cmd.clone());
    // Each section renders as a document of its own, with roff's preamble;
    // the page needs it once.
    let preamble = Roff::new().render();
    let mut page = preamble.clone().into_bytes();
    let sections = [
        Man::render_title,
        Man::render_name_section,
        Man::render_synopsis_section,
        Man::render_description_section,
        Man::render_options_section,
        Man::render_subcommands_section,
    ];
    for render in sections {
        let mut section = Vec::new();
        render(&man, &mut section).expect("writing into memory cannot fail");
        page.extend_from_slice(
            section
                .strip_prefix(preamble.as_bytes())
                .unwrap_or(&section),
        );
    }
    let mut extra = Roff::new();
    extra.control("SH", ["FILES"]);
    for (file, what) in [
        (
            "FILE",
            "the current chunk, replaced by atomic rename; in lossless mode removed by the consumer that delivered it",
        ),
        (
            "FILE.lock",
            "the lock file: producers and lossless consumers take an exclusive flock(2) on it",
        ),
        (
            "FILE.__new__",
            "the next chunk, renamed to FILE under the lock",
        ),
        (
            "FILE.history/",
            "the retained history of producer --retain N: the newest N chunks, numbered",
        ),
    ] {
        extra
            .control("TP", [])
            .text([bold(file)])
            .text([roman(what)]);
    }
    extra.control("SH", ["EXIT STATUS"]);
    for (status, what) in [
        (
            "0",
            "producer: end of input; lossless or history consumer: end of the stream; status, completions, man: written",
        ),
        (
            "1",
            "a runtime error, reported as one line naming the path and the cause; for status, also a position file or subscriber's record it could not read, flagged on its line after the rest of the bus is described",
        ),
        ("2", "a usage error, reported as one line and a hint"),
        ("130, 143", "interrupted by SIGINT or SIGTERM"),
    ] {
        extra
            .control("TP", [])
            .text([bold(status)])
            .text([roman(what)]);
    }
    page.extend_from_slice(extra.to_roff().as_bytes());
    let mut version = Vec::new();
    man.render_version_section(&mut version)
        .expect("writing into memory cannot fail");
    page.extend_from_slice(
        version
            .strip_prefix(preamble.as_bytes())
            .unwrap_or(&version),
    );
    page
}

/// filebus.1 and one page per subcommand, as `filebus-SUBCOMMAND.1`.
fn write_pages(dir: &Path) -> Result<(), String> {
    let cmd = documented();
    let mut pages = vec![("filebus.1".to_owned(), main_page(&cmd))];
    for sub in cmd.get_subcommands() {
        let man = manual(sub.clone());
        let mut page = Vec::new();
        man.render(&mut page)
            .expect("writing into memory cannot fail");
        pages.push((man.get_filename(), page));
    }
    for (name, page) in pages {
        write_page(dir, &name, &page)?;
    }
    Ok(())
}

/// Writes `page` as `dir/name`. DIR may be shared (a sticky, world-writable
/// directory), where someone else can plant `name` as a symbolic link or a
/// hard link to a file of ours: the page goes into a new file, which
/// `O_EXCL` creates without following any link, and is renamed over `name`,
/// which replaces whatever entry is there instead of writing through it.
fn write_page(dir: &Path, name: &str, page: &[u8]) -> Result<(), String> {
    let path = dir.join(name);
    let failed = |e: io::Error| format!("{}: {e}", path.display());
    let (temporary, mut file) = new_file(dir, name).map_err(failed)?;
    let written = file
        .write_all(page)
        .and_then(|()| std::fs::rename(&temporary, &path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(failed(e));
    }
    Ok(())
}

/// A new file `.NAME.SUFFIX` in `dir`. The suffix is random, so that no one
/// can block the write by planting the name beforehand.
fn new_file(dir: &Path, name: &str) -> io::Result<(PathBuf, File)> {
    let mut attempts = 0;
    loop {
        // Each RandomState has fresh keys, so each hash of nothing differs.
        let suffix = RandomState::new().build_hasher().finish();
        let temporary = dir.join(format!(".{name}.{suffix:016x}"));
        match File::create_new(&temporary) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 100 => attempts += 1,
            created => return created.map(|file| (temporary, file)),
        }
    }
}

fn write_stdout(bytes: &[u8]) -> Result<(), String> {
    // A closed standard output is /dev/null by now (see stdio.rs): writing
    // the page there would report success for output nobody gets.
    if crate::stdio::was_closed(1) {
        return Err("standard output was closed when filebus started".into());
    }
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("cannot write to standard output: {e}"))
}
