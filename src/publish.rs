//! Publishing chunks: stage the chunk in `F.__new__` and rename it over `F`,
//! all under the bus lock, so that `F` always names one whole chunk. With
//! retained history the staged chunk is also linked into `F.history/` before
//! the rename (see [`crate::history`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::libc;

use crate::bus::{BusOptions, Mode};
use crate::error::{Error, Result};
use crate::history::Retention;
use crate::lock::BusLock;
use crate::paths::BusPaths;
use crate::watch::{Awaited, Watcher};

/// The writing side of a bus. Obtained from [`crate::Bus::producer`].
#[derive(Debug)]
pub struct Producer {
    paths: BusPaths,
    options: BusOptions,
    lock: BusLock,
    watcher: Watcher,
    retention: Option<Retention>,
    last_seq: Option<u64>,
}

impl Producer {
    pub(crate) fn new(paths: BusPaths, options: BusOptions) -> Result<Self> {
        if options.retain.is_some() && options.mode == Mode::Lossless {
            return Err(Error::Incompatible(
                "retained history cannot be combined with back pressure",
            ));
        }
        std::fs::create_dir_all(paths.dir()).map_err(Error::io("create directory", paths.dir()))?;
        Ok(Producer {
            lock: BusLock::new(paths.lock().to_path_buf(), options.mode),
            watcher: Watcher::new(&paths, &options, Awaited::Removal),
            retention: options.retain.map(|keep| Retention::new(&paths, keep)),
            last_seq: None,
            paths,
            options,
        })
    }

    /// With retained history, the sequence number of the chunk this
    /// producer published last.
    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }

    /// Publishes one chunk. In lossless mode this first waits until the
    /// previous chunk has been consumed.
    ///
    /// An empty chunk is the end-of-stream marker in lossless mode; use
    /// [`Producer::finish`] for that.
    pub fn publish(&mut self, chunk: &[u8]) -> Result<()> {
        self.publish_with(|file| file.write_all(chunk))
    }

    /// Publishes the chunk that `fill` writes into the staging file. `fill`
    /// runs under the bus lock, so it must not wait for anything outside the
    /// bus; if it fails, nothing is published and `F` keeps the previous
    /// chunk.
    pub(crate) fn publish_with(
        &mut self,
        fill: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> Result<()> {
        match self.options.mode {
            Mode::Lossy => {
                let _held = self.lock.acquire()?;
                let Some(retention) = &mut self.retention else {
                    return stage_and_rename(&self.paths, fill, |_| Ok(()));
                };
                stage_and_rename(&self.paths, fill, |staging| {
                    self.last_seq = Some(retention.link(staging)?);
                    Ok(())
                })?;
                retention.prune()
            }
            Mode::Lossless => loop {
                self.watcher.arm();
                if !exists(&self.paths)? {
                    let _held = self.lock.acquire()?;
                    if !exists(&self.paths)? {
                        return stage_and_rename(&self.paths, fill, |_| Ok(()));
                    }
                }
                self.watcher.wait();
            },
        }
    }

    /// Ends the stream: in lossless mode publishes the empty end-of-stream
    /// marker (waiting for the last chunk to be consumed first); with
    /// retained history publishes it too; in plain lossy mode there is no
    /// marker and this does nothing.
    pub fn finish(mut self) -> Result<()> {
        if self.options.mode == Mode::Lossy && self.retention.is_none() {
            return Ok(());
        }
        self.publish(&[])
    }
}

/// Whether `F` holds a chunk not consumed yet. Anything but a regular file
/// there is an error: no consumer will ever remove it, so waiting would hang.
fn exists(paths: &BusPaths) -> Result<bool> {
    match std::fs::symlink_metadata(paths.data()) {
        Ok(meta) => Error::unless_regular(paths.data(), meta.file_type()).map(|()| true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("stat", paths.data())(e)),
    }
}

/// Has `fill` write the chunk to `F.__new__`, hands it to `before_rename`
/// and renames it to `F`. Must be called with the bus lock held.
fn stage_and_rename(
    paths: &BusPaths,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
    before_rename: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let staging = paths.staging();
    let mut file = create_staging(paths)?;
    let written = fill(&mut file);
    drop(file);
    let renamed = written
        .map_err(Error::io("write", staging))
        .and_then(|()| before_rename(staging))
        .and_then(|()| {
            std::fs::rename(staging, paths.data()).map_err(Error::io("rename", staging))
        });
    if renamed.is_err() {
        // Leave no partial chunk behind; `F` still names the previous one.
        let _ = std::fs::remove_file(staging);
    }
    renamed
}

/// Creates `F.__new__` afresh. `O_EXCL` never follows a symlink and never
/// reuses an inode a neighbour planted (a hard link to someone else's file
/// would otherwise be truncated), so a leftover entry is removed, not opened.
fn create_staging(paths: &BusPaths) -> Result<File> {
    let staging = paths.staging();
    let open = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o666)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(staging)
    };
    match open() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            log::debug!("removing stale {}", staging.display());
            std::fs::remove_file(staging).map_err(Error::io("remove stale", staging))?;
            open()
        }
        other => other,
    }
    .map_err(Error::io("create", staging))
}
