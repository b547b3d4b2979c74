//! The shared-memory log beside `F` (`F.shm`): a second path for this
//! crate's own lossy participants on one host. Every chunk on the file
//! protocol costs a file created, linked, renamed and opened on the other
//! side; a lossy producer also copies the chunk into this bounded ring,
//! under the bus lock it already holds and before the rename, and rings a
//! doorbell (a write that raises inotify's `IN_MODIFY` on `F.shm`); lossy
//! consumers copy it out of their read-only mapping. `F` still gets every
//! chunk, for the other implementations, and a consumer still delivers what
//! reached `F` without the log (a Python or bash producer), in order and
//! never twice. Layout and rules: docs/PROTOCOL.md; the reasons:
//! docs/design/shared-memory-log.md.
//!
//! The reader trusts nothing in the mapping: every position, length and
//! kind is checked, a record is delivered only if the writer's `claim`
//! shows that it was not overwritten while it was copied, and anything
//! inconsistent makes the reader leave the log and follow `F` alone.

use std::ffi::OsString;
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{Ordering, fence};

use nix::libc;

use crate::error::Result;
use crate::paths::BusPaths;
use crate::remote;
use crate::sink::Sink;
use crate::sys::{self, SharedMap};
use crate::watch::Watcher;

/// The environment variable that turns the log off for a process (any
/// value but empty or `0`), as `FILEBUS_PORTABLE` forces the portable path:
/// the test suite runs once with it.
pub const NO_LOG_VAR: &str = "FILEBUS_NO_SHM_LOG";

/// The smallest ring a producer makes: room for a few records.
const MIN_CAPACITY: u64 = 64 << 10;

const MAGIC: u64 = u64::from_ne_bytes(*b"FBUSLOG1");
const VERSION: u32 = 2;
const HEADER: u64 = 4096;
const OFF_VERSION: usize = 8;
const OFF_CAPACITY: usize = 16;
const OFF_CLAIM: usize = 64;
const OFF_COMMIT: usize = 128;
const OFF_NEWEST: usize = 136;
const OFF_DOORBELL: u64 = 192;
/// The settled-`F` seqlock: odd while a producer rewrites a slot.
const OFF_FGEN: usize = 256;
/// Two slots, each the sequence number of a record and the identity of the
/// file that became (or is about to become) `F` for it.
const OFF_FSLOTS: usize = 320;
const FSLOT: usize = 64;

const RECORD_HEADER: u64 = 128;
/// Records start at multiples of this, so that the end of the ring always
/// has room for a whole record header (a padding record) or none at all.
const ALIGN: u64 = RECORD_HEADER;
const R_POS: u64 = 0;
const R_SEQ: u64 = 8;
const R_KIND_LEN: u64 = 16;
const R_REPLACES: u64 = 24;

const KIND_DATA: u32 = 1;
const KIND_PAD: u32 = 2;
const KIND_FILE: u32 = 3;

fn version_word() -> u64 {
    let mut bytes = [0u8; 8];
    bytes[..4].copy_from_slice(&VERSION.to_ne_bytes());
    bytes[4..].copy_from_slice(&(HEADER as u32).to_ne_bytes());
    u64::from_ne_bytes(bytes)
}

fn kind_len(kind: u32, len: u32) -> u64 {
    let mut bytes = [0u8; 8];
    bytes[..4].copy_from_slice(&kind.to_ne_bytes());
    bytes[4..].copy_from_slice(&len.to_ne_bytes());
    u64::from_ne_bytes(bytes)
}

fn split_kind_len(word: u64) -> (u32, u32) {
    let b = word.to_ne_bytes();
    (
        u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
        u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
    )
}

/// `F.shm`.
pub(crate) fn log_path(paths: &BusPaths) -> PathBuf {
    with_suffix(paths.data(), ".shm")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(suffix);
    PathBuf::from(s)
}

/// Whether the log may be used on the bus in `dir` by this process: not on
/// the portable path, not when [`NO_LOG_VAR`] turns it off, not on a
/// filesystem shared across hosts (a mapping is not coherent there).
pub(crate) fn wanted(dir: &Path) -> bool {
    let off = std::env::var_os(NO_LOG_VAR).is_some_and(|v| !v.is_empty() && v != "0");
    !off && !sys::portable() && remote::shared_filesystem(dir).is_none()
}

/// What tells one chunk file from another: device, inode, size and
/// modification time (the log does not hold the files open, so an inode
/// number alone may be reused). All zero: no file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct FileId([u64; 5]);

impl FileId {
    pub(crate) fn of(m: &Metadata) -> FileId {
        FileId([
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime() as u64,
            m.mtime_nsec() as u64,
        ])
    }

    fn is_none(&self) -> bool {
        self.0 == [0; 5]
    }
}

fn round_up(n: u64) -> Option<u64> {
    n.checked_add(ALIGN - 1).map(|n| n / ALIGN * ALIGN)
}

/// Reads and checks the header page of a mapping of `size` bytes: the
/// ring's capacity.
fn check_header(map: &SharedMap, size: u64) -> std::result::Result<u64, String> {
    let word = |off| map.load(off, Ordering::Relaxed).unwrap_or(0);
    if word(0) != MAGIC {
        return Err("no log header".into());
    }
    if word(OFF_VERSION) != version_word() {
        return Err("another version of the log".into());
    }
    let capacity = word(OFF_CAPACITY);
    if capacity < ALIGN * 4 || capacity % ALIGN != 0 || Some(size) != HEADER.checked_add(capacity) {
        return Err(format!("capacity {capacity} does not match the file"));
    }
    Ok(capacity)
}

/// The producer's side: appends each chunk it publishes.
#[derive(Debug)]
pub(crate) struct LogWriter {
    file: File,
    map: SharedMap,
    capacity: u64,
}

impl LogWriter {
    /// The bus's log, made (or replaced, if it is not one this process can
    /// use) with a ring of `size` bytes. Called with the bus lock held.
    /// Fails where there can be no log: no room on the filesystem, no
    /// mapping, another user's log.
    pub(crate) fn open(paths: &BusPaths, size: usize) -> io::Result<LogWriter> {
        let path = log_path(paths);
        match Self::existing(&path) {
            Ok(writer) => return Ok(writer),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Err(e),
            Err(e) => log::info!("replacing {}: {e}", path.display()),
        }
        Self::create(&path, size)
    }

    fn existing(path: &Path) -> io::Result<LogWriter> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)?;
        let meta = file.metadata()?;
        if !meta.file_type().is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        let map = sys::map_shared(&file, to_usize(meta.size())?, true)?;
        let capacity = check_header(&map, meta.size()).map_err(io::Error::other)?;
        let writer = LogWriter {
            file,
            map,
            capacity,
        };
        writer.positions().map_err(io::Error::other)?;
        Ok(writer)
    }

    fn create(path: &Path, size: usize) -> io::Result<LogWriter> {
        let capacity = (size as u64 / ALIGN * ALIGN).max(MIN_CAPACITY);
        let staging = with_suffix(path, ".__new__");
        let made = (|| {
            // A leftover (or a planted link) is removed, never opened.
            match std::fs::remove_file(&staging) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o644)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&staging)?;
            // Whole, before it is mapped: a full tmpfs fails here (ENOSPC)
            // rather than with SIGBUS at the first touch of a page.
            sys::allocate(&file, HEADER + capacity)?;
            let map = sys::map_shared(&file, to_usize(HEADER + capacity)?, true)?;
            map.store(OFF_VERSION, version_word(), Ordering::Relaxed);
            map.store(OFF_CAPACITY, capacity, Ordering::Relaxed);
            map.store(0, MAGIC, Ordering::Release);
            std::fs::rename(&staging, path)?;
            Ok(LogWriter {
                file,
                map,
                capacity,
            })
        })();
        if made.is_err() {
            let _ = std::fs::remove_file(&staging);
        }
        made
    }

    /// `(claim, commit, newest)`, checked: what a writer killed at any
    /// point leaves passes, what no writer of ours leaves does not.
    fn positions(&self) -> std::result::Result<(u64, u64, u64), String> {
        let load = |off| self.map.load(off, Ordering::Acquire).unwrap_or(0);
        let (claim, commit, newest) = (load(OFF_CLAIM), load(OFF_COMMIT), load(OFF_NEWEST));
        let sane = claim >= commit
            && commit >= newest
            && commit % ALIGN == 0
            && newest % ALIGN == 0
            && (commit == 0 || commit - newest <= self.capacity);
        if !sane || self.map.broken() {
            return Err(format!(
                "inconsistent positions (claim {claim}, commit {commit}, newest {newest})"
            ));
        }
        Ok((claim, commit, newest))
    }

    fn ring(&self, pos: u64) -> u64 {
        HEADER + pos % self.capacity
    }

    /// Writes a record header at `pos` (claimed already).
    fn put_header(&self, pos: u64, seq: u64, kind: u32, len: u32, replaces: FileId) {
        let at = self.ring(pos);
        let put = |off: u64, v: u64| {
            self.map.store((at + off) as usize, v, Ordering::Relaxed);
        };
        put(R_POS, pos);
        put(R_SEQ, seq);
        put(R_KIND_LEN, kind_len(kind, len));
        for (i, word) in replaces.0.iter().enumerate() {
            put(R_REPLACES + 8 * i as u64, *word);
        }
    }

    /// The sequence number of the newest record, if any.
    pub(crate) fn newest_seq(&self) -> Option<u64> {
        let (_, commit, newest) = self.positions().ok()?;
        (commit > 0).then(|| {
            let at = (self.ring(newest) + R_SEQ) as usize;
            self.map.load(at, Ordering::Relaxed).unwrap_or(0)
        })
    }

    /// Whether a chunk of `len` bytes goes into the log whole: up to a
    /// quarter of the ring (and 4 GiB).
    pub(crate) fn holds(&self, len: usize) -> bool {
        len as u64 <= (self.capacity / 4).min(u64::from(u32::MAX))
    }

    /// Appends `chunk`, published while `F` is the file `replaces`
    /// describes: its sequence number, and whether
    /// its data is in the log (a chunk over a quarter of the ring is not:
    /// readers take it from `F`, so it must reach `F`). Called with the bus
    /// lock held, before anything is written for `F`.
    pub(crate) fn append(&self, chunk: &[u8], replaces: Option<FileId>) -> io::Result<Appended> {
        let (claim, commit, _) = self.positions().map_err(io::Error::other)?;
        let seq = self.newest_seq().map_or(1, |seq| seq + 1);
        let len = chunk.len() as u64;
        let in_log = self.holds(chunk.len());
        let (kind, data) = if in_log {
            (KIND_DATA, len)
        } else {
            (KIND_FILE, 0)
        };
        let total = RECORD_HEADER + round_up(data).expect("bounded by the capacity");
        let mut pos = commit;
        let room = self.capacity - pos % self.capacity;
        let pad = (room < total).then_some(room);
        if let Some(pad) = pad {
            pos += pad;
        }
        let end = pos + total;
        self.map.store(OFF_CLAIM, claim.max(end), Ordering::Relaxed);
        // Readers that see any byte written below see the claim above.
        fence(Ordering::Release);
        if pad.is_some() {
            self.put_header(commit, 0, KIND_PAD, 0, FileId::default());
        }
        if in_log {
            let at = (self.ring(pos) + RECORD_HEADER) as usize;
            self.map.write_from(at, chunk);
        }
        let replaces = replaces.unwrap_or_default();
        self.put_header(pos, seq, kind, data as u32, replaces);
        self.map.store(OFF_NEWEST, pos, Ordering::Relaxed);
        self.map.store(OFF_COMMIT, end, Ordering::Release);
        if self.map.broken() {
            return Err(io::Error::other("the log was truncated under its mapping"));
        }
        Ok(Appended { seq, in_log })
    }

    /// Copies the data of the newest record into `out` (the writer reads
    /// back what it appended, under the lock: nobody else writes).
    pub(crate) fn copy_newest(&self, out: &mut Vec<u8>) -> io::Result<()> {
        let (_, _, newest) = self.positions().map_err(io::Error::other)?;
        let at = self.ring(newest);
        let word = self.map.load((at + R_KIND_LEN) as usize, Ordering::Relaxed);
        let (_, len) = split_kind_len(word.unwrap_or(0));
        out.clear();
        if !self
            .map
            .read_into((at + RECORD_HEADER) as usize, len as usize, out)
        {
            return Err(io::Error::other("the newest record lies outside the log"));
        }
        Ok(())
    }

    /// Rings the doorbell after appending: a write that raises `IN_MODIFY`
    /// for the readers' watches. Once for a batch of records is enough:
    /// readers read until they find nothing new before they wait.
    pub(crate) fn ring_doorbell(&self) -> io::Result<()> {
        let commit = self.map.load(OFF_COMMIT, Ordering::Relaxed).unwrap_or(0);
        self.file.write_at(&commit.to_ne_bytes(), OFF_DOORBELL)?;
        Ok(())
    }

    /// Says that the file `file` is about to be renamed to `F` for record
    /// `seq`, so that readers who took that record from the log know it
    /// when they see it there. Called with the bus lock held, before the
    /// rename. A seqlock (odd while a slot is rewritten) keeps the two
    /// slots, the last two such files, consistent for readers; a producer
    /// killed while it was odd leaves it for the next one to finish.
    pub(crate) fn settle(&self, seq: u64, file: FileId) {
        let odd = self.map.load(OFF_FGEN, Ordering::Relaxed).unwrap_or(0) | 1;
        self.map.store(OFF_FGEN, odd, Ordering::Relaxed);
        fence(Ordering::Release);
        let slot = OFF_FSLOTS + (odd.div_ceil(2) % 2) as usize * FSLOT;
        self.map.store(slot, seq, Ordering::Relaxed);
        for (i, word) in file.0.iter().enumerate() {
            self.map.store(slot + 8 + 8 * i, *word, Ordering::Relaxed);
        }
        self.map.store(OFF_FGEN, odd + 1, Ordering::Release);
    }
}

/// What [`LogWriter::append`] did with a chunk.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Appended {
    pub(crate) seq: u64,
    /// Whether the chunk's bytes are in the log (else only its record).
    pub(crate) in_log: bool,
}

fn to_usize(n: u64) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| io::ErrorKind::InvalidInput.into())
}

/// What [`LogReader::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// A chunk, after skipping `skipped` chunks the writer overwrote first.
    Data {
        bytes: Vec<u8>,
        seq: u64,
        replaces: FileId,
        skipped: u64,
    },
    /// A chunk published through `F` only (too large for the log).
    InFile { replaces: FileId, skipped: u64 },
    /// Nothing committed after the last record read.
    Nothing,
    /// The log cannot be trusted (or was truncated): why.
    Untrusted(String),
}

/// How many bytes of chunks waiting in the log a consumer hands its sink at
/// once, at most, when the sink takes several (a descriptor: one write
/// instead of one per chunk, which is what wakes the process reading it).
const BATCH_BYTES: usize = 64 << 10;

/// How many times a reader lapped while copying tries again before it
/// lets the caller look at `F` instead.
const LAPPED_TRIES: u32 = 8;

/// A consumer's side: reads records in order from a read-only mapping.
#[derive(Debug)]
pub(crate) struct LogReader {
    map: SharedMap,
    capacity: u64,
    /// Device and inode numbers of the log file mapped.
    id: (u64, u64),
    cursor: u64,
    /// The sequence number the next record should carry; `None` until a
    /// record was read.
    expected: Option<u64>,
}

impl LogReader {
    /// Maps the log at `path` read-only and starts after its last record,
    /// or at it when `start_at` says yes to the file that record replaced
    /// (a record whose chunk is not in `F` yet: it is the latest value).
    /// `Ok(None)` when there is none; an error (to be said with `-v`) when
    /// there is one that cannot be used.
    pub(crate) fn attach(
        path: &Path,
        trusted: impl Fn(u32) -> bool,
        start_at: impl Fn(FileId) -> bool,
    ) -> io::Result<Option<Self>> {
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        if !meta.file_type().is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        // Writable by nobody but an owner trusted as the bus's chunks are.
        if meta.mode() & 0o022 != 0 || !trusted(meta.uid()) {
            return Err(io::Error::other(format!(
                "owned by uid {} with mode {:o}: not trusted",
                meta.uid(),
                meta.mode() & 0o7777
            )));
        }
        if meta.size() < HEADER + ALIGN * 4 || meta.size() > (1 << 40) {
            return Err(io::Error::other(format!("size {}", meta.size())));
        }
        let map = sys::map_shared(&file, to_usize(meta.size())?, false)?;
        let capacity = check_header(&map, meta.size()).map_err(io::Error::other)?;
        let mut reader = LogReader {
            map,
            capacity,
            id: (meta.dev(), meta.ino()),
            cursor: 0,
            expected: None,
        };
        reader.cursor = reader
            .commit()
            .filter(|c| c % ALIGN == 0)
            .ok_or_else(|| io::Error::other("no commit position"))?;
        // The sequence number the next record should carry, for counting
        // what a lapped reader skips (checked like everything else when a
        // record comes).
        reader.expected = if reader.cursor == 0 {
            Some(1)
        } else {
            let newest = reader.map.load(OFF_NEWEST, Ordering::Acquire).unwrap_or(0);
            let record = HEADER + newest % capacity;
            let word = |off: u64| reader.map.load((record + off) as usize, Ordering::Relaxed);
            let seq = word(R_SEQ);
            let replaces = [0, 1, 2, 3, 4].map(|i| word(R_REPLACES + 8 * i).unwrap_or(0));
            // Checked like any record when it is read; a record that is
            // not what it seems is refused then.
            if newest.is_multiple_of(ALIGN) && newest < reader.cursor && start_at(FileId(replaces))
            {
                reader.cursor = newest;
                seq
            } else {
                seq.and_then(|seq| seq.checked_add(1))
            }
        };
        Ok(Some(reader))
    }

    /// Starts this reader at the log's first record (position 0, sequence
    /// number 1, where a producer starts a log it makes): one lapped since
    /// skips to the newest and counts what it skipped.
    fn rewind(&mut self) {
        self.cursor = 0;
        self.expected = Some(1);
    }

    /// Whether `m` describes the log file this reader mapped.
    pub(crate) fn is(&self, m: &Metadata) -> bool {
        self.id == (m.dev(), m.ino())
    }

    /// The commit position; `None` once the file was truncated (the load
    /// itself may be what faults and finds zeros).
    fn commit(&self) -> Option<u64> {
        let commit = self.map.load(OFF_COMMIT, Ordering::Acquire);
        if self.map.broken() {
            return None;
        }
        commit
    }

    /// The record whose chunk is in the file `id` describes, if a producer
    /// settled that file as `F` lately (see [`LogWriter::settle`]). The
    /// file must have been looked at before this is called: a producer
    /// settles a file before renaming it.
    fn settled(&self, id: FileId) -> Option<u64> {
        if id.is_none() {
            return None;
        }
        let slot = |i: u64| {
            let at = OFF_FSLOTS + i as usize * FSLOT;
            let word = |k: usize| self.map.load(at + 8 * k, Ordering::Relaxed).unwrap_or(0);
            (word(0), FileId([1, 2, 3, 4, 5].map(word)))
        };
        // A producer rewrites a slot in a few stores: a reader that met one
        // tries again, and a producer killed meanwhile left the other slot
        // whole.
        for _ in 0..LAPPED_TRIES {
            let before = self.map.load(OFF_FGEN, Ordering::Acquire)?;
            let slots = [slot(0), slot(1)];
            fence(Ordering::Acquire);
            let after = self.map.load(OFF_FGEN, Ordering::Relaxed)?;
            if self.map.broken() {
                return None;
            }
            if before != after {
                continue;
            }
            let whole = |i: u64| before % 2 == 0 || i == before / 2 % 2;
            return (0..2)
                .filter(|&i| whole(i))
                .map(|i| slots[i as usize])
                .find(|(_, file)| *file == id)
                .map(|(seq, _)| seq);
        }
        None
    }

    /// Whether records were committed that this reader has not read.
    pub(crate) fn pending(&self) -> bool {
        self.commit().is_some_and(|c| c != self.cursor)
    }

    /// The next record, or the newest if this reader was lapped.
    #[cfg(test)]
    pub(crate) fn next(&mut self) -> Next {
        let mut out = Vec::new();
        match self.next_appending(&mut out) {
            Next::Data {
                seq,
                replaces,
                skipped,
                ..
            } => Next::Data {
                bytes: out,
                seq,
                replaces,
                skipped,
            },
            other => other,
        }
    }

    /// [`LogReader::next`], appending a chunk's bytes to `out` instead
    /// (its `bytes` are left empty); `out` is as it was for anything else.
    pub(crate) fn next_appending(&mut self, out: &mut Vec<u8>) -> Next {
        let mut skipped_pad = 0;
        for _ in 0..LAPPED_TRIES {
            match self.step(out) {
                Step::Record(next) => return next,
                Step::Lapped => {
                    if let Err(why) = self.jump_to_newest() {
                        return Next::Untrusted(why);
                    }
                }
                // Padding fills at most the end of one lap; each step moves
                // the cursor past it.
                Step::Padding => {
                    skipped_pad += 1;
                    if skipped_pad > 2 {
                        return Next::Untrusted("padding after padding".into());
                    }
                }
            }
        }
        // The writer keeps overwriting what this reader copies: the caller
        // takes the latest chunk from `F`, and the log resumes after it.
        match self.commit() {
            Some(commit) => {
                self.cursor = commit;
                self.expected = None;
                Next::Nothing
            }
            None => Next::Untrusted("truncated".into()),
        }
    }

    fn jump_to_newest(&mut self) -> std::result::Result<(), String> {
        let commit = self.commit().ok_or("truncated")?;
        let newest = self
            .map
            .load(OFF_NEWEST, Ordering::Acquire)
            .ok_or("truncated")?;
        if newest % ALIGN != 0 || newest >= commit || commit - newest > self.capacity {
            return Err(format!("newest record {newest} beside commit {commit}"));
        }
        self.cursor = newest;
        Ok(())
    }

    fn step(&mut self, out: &mut Vec<u8>) -> Step {
        let untrusted = |why: String| Step::Record(Next::Untrusted(why));
        let Some(commit) = self.commit() else {
            return untrusted("truncated".into());
        };
        if commit == self.cursor {
            return Step::Record(Next::Nothing);
        }
        if commit < self.cursor || commit % ALIGN != 0 {
            return untrusted(format!(
                "commit {commit} before the record read last ({})",
                self.cursor
            ));
        }
        if commit - self.cursor > self.capacity {
            return Step::Lapped;
        }
        let pos = self.cursor;
        let off = pos % self.capacity;
        let at = HEADER + off;
        // Always fits with the ring and `off` multiples of 128; `off` is a
        // multiple because commit was checked to be one.
        if off + RECORD_HEADER > self.capacity {
            return untrusted(format!("record at {pos} crosses the ring's end"));
        }
        let mut header = Vec::with_capacity(RECORD_HEADER as usize);
        if !self
            .map
            .read_into(at as usize, RECORD_HEADER as usize, &mut header)
        {
            return untrusted("record header outside the log".into());
        }
        let word = |i: u64| {
            let i = i as usize;
            u64::from_ne_bytes(header[i..i + 8].try_into().expect("8 bytes"))
        };
        let (kind, len) = split_kind_len(word(R_KIND_LEN));
        let base = out.len();
        let fits = u64::from(len) <= self.capacity - off - RECORD_HEADER;
        if kind == KIND_DATA && fits {
            let copied = self
                .map
                .read_into((at + RECORD_HEADER) as usize, len as usize, out);
            debug_assert!(copied, "checked to fit");
        }
        let step = self.check(pos, commit, &header, out.len() - base);
        if !matches!(step, Step::Record(Next::Data { .. })) {
            out.truncate(base);
        }
        step
    }

    /// Whether the record at `pos`, whose header and data (`copied` bytes)
    /// were just copied, was whole and makes sense.
    fn check(&mut self, pos: u64, commit: u64, header: &[u8], copied: usize) -> Step {
        let untrusted = |why: String| Step::Record(Next::Untrusted(why));
        let off = pos % self.capacity;
        let word = |i: u64| {
            let i = i as usize;
            u64::from_ne_bytes(header[i..i + 8].try_into().expect("8 bytes"))
        };
        let (kind, len) = split_kind_len(word(R_KIND_LEN));
        let fits = u64::from(len) <= self.capacity - off - RECORD_HEADER;
        debug_assert!(copied == 0 || copied == len as usize);
        // Was any of it overwritten while it was copied?
        fence(Ordering::Acquire);
        let claim = self.map.load(OFF_CLAIM, Ordering::Relaxed).unwrap_or(0);
        if self.map.broken() {
            return untrusted("truncated".into());
        }
        if claim > pos.saturating_add(self.capacity) {
            return Step::Lapped;
        }
        // Copied whole: now it must make sense.
        if word(R_POS) != pos {
            return untrusted(format!("record at {pos} says it is at {}", word(R_POS)));
        }
        let total = match kind {
            KIND_PAD => self.capacity - off,
            KIND_DATA | KIND_FILE if fits => {
                RECORD_HEADER + round_up(u64::from(len)).expect("fits in the ring")
            }
            _ => return untrusted(format!("record at {pos}: kind {kind}, length {len}")),
        };
        if total > commit - pos {
            return untrusted(format!("record at {pos} ends past commit {commit}"));
        }
        self.cursor = pos + total;
        if kind == KIND_PAD {
            return Step::Padding;
        }
        let seq = word(R_SEQ);
        let skipped = match self.expected {
            Some(expected) if seq < expected => {
                return untrusted(format!("sequence {seq} after {}", expected - 1));
            }
            Some(expected) => seq - expected,
            None => 0,
        };
        self.expected = seq.checked_add(1);
        let replaces = FileId([0, 1, 2, 3, 4].map(|i| word(R_REPLACES + 8 * i)));
        Step::Record(if kind == KIND_DATA {
            Next::Data {
                bytes: Vec::new(),
                seq,
                replaces,
                skipped,
            }
        } else {
            Next::InFile { replaces, skipped }
        })
    }
}

enum Step {
    Record(Next),
    Lapped,
    Padding,
}

/// A lossy consumer's use of the log: reads it when there is one it can
/// trust, and tells the consumer which `F` the records it delivered
/// already stand for.
#[derive(Debug)]
pub(crate) struct LogFollower {
    path: PathBuf,
    data: PathBuf,
    dir: PathBuf,
    wanted: bool,
    reader: Option<LogReader>,
    /// A log left as untrusted: not attached again until replaced.
    refused: Option<(u64, u64)>,
    /// Whether the first look for a log was made.
    tried: bool,
    /// The `F` the last record read replaced (its rename may not have
    /// happened yet): older than what was delivered. `None` once `F` was
    /// delivered from the file.
    replaces: Option<FileId>,
    /// The sequence number of the last chunk delivered from the log: a
    /// settled `F` of that record or an older one was delivered already.
    delivered: Option<u64>,
    /// A record read while gathering a batch that ends it: dealt with first
    /// at the next call.
    stash: Option<Next>,
}

impl LogFollower {
    pub(crate) fn new(paths: &BusPaths) -> Self {
        LogFollower {
            path: log_path(paths),
            data: paths.data().to_path_buf(),
            dir: paths.dir().to_path_buf(),
            wanted: wanted(paths.dir()),
            reader: None,
            refused: None,
            tried: false,
            replaces: None,
            delivered: None,
            stash: None,
        }
    }

    /// Attaches to the bus's log, or to its replacement: one `lstat`. A
    /// `newcomer` (at its first look) starts at the latest value; a reader
    /// that was following the bus already when this log appeared (made, or
    /// put in place of another, since) starts at its first record: every
    /// record of it came after what this reader knew, and it has delivered
    /// none of them, since it attaches before it delivers an `F` that the
    /// log did not.
    fn attach(&mut self, watcher: &mut Watcher, newcomer: bool) {
        let meta = match std::fs::symlink_metadata(&self.path) {
            Ok(meta) => meta,
            Err(_) => {
                if self.reader.take().is_some() {
                    watcher.watch_doorbell(None);
                }
                return;
            }
        };
        if self.reader.as_ref().is_some_and(|r| r.is(&meta))
            || self.refused == Some((meta.dev(), meta.ino()))
        {
            return;
        }
        let dir_owner = std::fs::metadata(&self.dir).map(|m| m.uid()).ok();
        let me = nix::unistd::geteuid().as_raw();
        let trusted = |uid| uid == me || uid == 0 || Some(uid) == dir_owner;
        // The record whose chunk is on its way to `F` (its rename put off)
        // is newer than what `F` names: a newcomer starts with it.
        let f_now = current_file(&self.data).unwrap_or_default();
        match LogReader::attach(&self.path, trusted, |replaces| replaces == f_now) {
            Ok(Some(mut reader)) => {
                log::debug!("reading {}", self.path.display());
                if !newcomer {
                    reader.rewind();
                }
                self.reader = Some(reader);
                self.replaces = None;
                self.delivered = None;
                self.stash = None;
                watcher.watch_doorbell(Some(self.path.clone()));
            }
            Ok(None) => {}
            Err(e) => {
                log::info!(
                    "not using {} ({e}); reading {} alone",
                    self.path.display(),
                    self.data.display()
                );
                self.refused = Some((meta.dev(), meta.ino()));
                self.reader = None;
                watcher.watch_doorbell(None);
            }
        }
    }

    /// Whether a record is waiting to be read.
    pub(crate) fn pending(&self) -> bool {
        self.reader.as_ref().is_some_and(LogReader::pending)
    }

    /// Delivers the next record of the log into `sink`, with those after it
    /// that are committed already if the sink takes several chunks at once
    /// ([`Sink::batches`], up to [`BATCH_BYTES`]): their size and how many
    /// they are, or `None` when the log has nothing (or only a chunk to
    /// take from `F`), and the consumer looks at `F`.
    pub(crate) fn take(
        &mut self,
        sink: &mut impl Sink,
        watcher: &mut Watcher,
    ) -> Result<Option<(u64, u64)>> {
        if !self.wanted {
            return Ok(None);
        }
        if !std::mem::replace(&mut self.tried, true) {
            self.attach(watcher, true);
        }
        let say_skipped = |skipped: u64| {
            if skipped > 0 {
                log::info!("lapped in the shared-memory log: skipped {skipped} chunks");
            }
        };
        // Looked for again only when F names a chunk the log did not
        // deliver ([`LogFollower::recheck`]).
        let Some(reader) = &mut self.reader else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        let mut count = 0;
        // Only what ends a batch is stashed: never a chunk.
        let mut next = match self.stash.take() {
            Some(other) => other,
            None => reader.next_appending(&mut bytes),
        };
        loop {
            match next {
                Next::Data {
                    seq,
                    replaces,
                    skipped,
                    ..
                } => {
                    say_skipped(skipped);
                    self.replaces = Some(replaces);
                    self.delivered = Some(seq);
                    count += 1;
                }
                // Ends a batch: dealt with at the next call, after it.
                other if count > 0 => {
                    self.stash = Some(other);
                    break;
                }
                Next::InFile { replaces, skipped } => {
                    say_skipped(skipped);
                    self.replaces = Some(replaces);
                    return Ok(None);
                }
                Next::Nothing => return Ok(None),
                Next::Untrusted(why) => {
                    log::info!(
                        "not using {} ({why}); reading {} alone",
                        self.path.display(),
                        self.data.display()
                    );
                    self.refused = self.reader.take().map(|r| r.id);
                    self.replaces = None;
                    self.delivered = None;
                    watcher.watch_doorbell(None);
                    return Ok(None);
                }
            }
            if !(sink.batches() && bytes.len() < BATCH_BYTES && reader.pending()) {
                break;
            }
            next = reader.next_appending(&mut bytes);
        }
        let size = bytes.len() as u64;
        sink.take_bytes(bytes).map_err(|e| e.at(&self.data))?;
        Ok(Some((size, count)))
    }

    /// `F` names a chunk the log did not deliver: a producer without the
    /// log published it, or one that replaced the log (a damaged one, or
    /// one of another version) and appends to the new one. Looks for a new
    /// log then, and not at every look at `F`.
    pub(crate) fn recheck(&mut self, watcher: &mut Watcher) {
        if self.wanted {
            self.attach(watcher, false);
        }
    }

    /// Whether a record was read since `F` was last delivered from the file.
    pub(crate) fn has_record(&self) -> bool {
        self.replaces.is_some()
    }

    /// Whether the chunk file `m` (what `F` names, looked at just now) was
    /// delivered through the log already (a producer settled it as `F` for
    /// a record delivered), or is older than what was (the file the last
    /// record replaced: its rename has not happened yet).
    pub(crate) fn covers(&self, m: &Metadata) -> bool {
        let id = FileId::of(m);
        if self.replaces == Some(id) {
            return true;
        }
        let settled = self.reader.as_ref().and_then(|r| r.settled(id));
        settled.is_some_and(|seq| self.delivered.is_some_and(|done| seq <= done))
    }

    /// `F` (described by `m`) was delivered from the file: it is newer than
    /// the last record, and if a producer settled it for a record, that
    /// record and those before it are delivered.
    pub(crate) fn delivered_file(&mut self, m: &Metadata) {
        self.replaces = None;
        if let Some(seq) = self.reader.as_ref().and_then(|r| r.settled(FileId::of(m))) {
            self.delivered = Some(self.delivered.map_or(seq, |done| done.max(seq)));
        }
    }
}

/// The identity of what `F` (at `data`) names now, if it is a regular
/// file: for a producer under the lock, and for a reader attaching.
pub(crate) fn current_file(data: &Path) -> Option<FileId> {
    std::fs::symlink_metadata(data)
        .ok()
        .filter(|m| m.file_type().is_file())
        .map(|m| FileId::of(&m))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A bus in a fresh directory on tmpfs where there is one (as on the
    /// machines this runs on), else in the temporary directory.
    fn bus() -> (tempfile::TempDir, BusPaths) {
        let dir = tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .unwrap();
        let paths = BusPaths::new(dir.path().join("bus"));
        (dir, paths)
    }

    /// Whether this process may map logs at all (not on the portable
    /// path, which has none: checked here).
    fn maps() -> bool {
        if sys::portable() {
            let dir = tempfile::tempdir().unwrap();
            let paths = BusPaths::new(dir.path().join("bus"));
            assert!(LogWriter::open(&paths, 1 << 20).is_err());
            return false;
        }
        true
    }

    /// A file holding `bytes`, as a producer stages a chunk.
    fn staged(paths: &BusPaths, bytes: &[u8]) -> File {
        let mut file = tempfile::tempfile_in(paths.dir()).unwrap();
        file.write_all(bytes).unwrap();
        file
    }

    fn chunk(n: usize, len: usize) -> Vec<u8> {
        let mut bytes = vec![(n % 251) as u8; len];
        let tag = (n as u64).to_ne_bytes();
        let k = tag.len().min(len);
        bytes[..k].copy_from_slice(&tag[..k]);
        bytes
    }

    fn append(writer: &LogWriter, bytes: &[u8]) {
        writer.append(bytes, None).unwrap();
    }

    fn reader(paths: &BusPaths) -> LogReader {
        LogReader::attach(&log_path(paths), |_| true, |_| false)
            .unwrap()
            .expect("a log")
    }

    fn data(next: Next) -> (Vec<u8>, u64) {
        match next {
            Next::Data { bytes, skipped, .. } => (bytes, skipped),
            other => panic!("expected a chunk, got {other:?}"),
        }
    }

    /// Writes `bytes` into the log file at `off`, as a hostile or buggy
    /// writer would.
    fn poke(paths: &BusPaths, off: u64, bytes: &[u8]) {
        let file = OpenOptions::new()
            .write(true)
            .open(log_path(paths))
            .unwrap();
        file.write_at(bytes, off).unwrap();
    }

    #[test]
    fn chunks_come_out_whole_and_in_order_across_the_ring_end() {
        if !maps() {
            return;
        }
        let (_dir, paths) = bus();
        let writer = LogWriter::open(&paths, 64 << 10).unwrap();
        let mut reader = reader(&paths);
        assert_eq!(reader.next(), Next::Nothing);
        // 1 byte, past a page, up to a quarter of the ring; many laps.
        for (n, len) in [1, 4096, 4097, 16384, 3000]
            .iter()
            .cycle()
            .take(200)
            .enumerate()
        {
            let sent = chunk(n, *len);
            append(&writer, &sent);
            assert_eq!(data(reader.next()), (sent, 0), "chunk {n}");
            assert_eq!(reader.next(), Next::Nothing);
        }
    }

    #[test]
    fn a_chunk_over_a_quarter_of_the_ring_is_left_to_f() {
        if !maps() {
            return;
        }
        let (_dir, paths) = bus();
        let writer = LogWriter::open(&paths, 64 << 10).unwrap();
        let mut reader = reader(&paths);
        let f = staged(&paths, b"in F");
        let replaces = FileId::of(&f.metadata().unwrap());
        let appended = writer.append(&chunk(1, 16385), Some(replaces)).unwrap();
        assert!(!appended.in_log);
        assert_eq!(
            reader.next(),
            Next::InFile {
                replaces,
                skipped: 0
            }
        );
    }

    #[test]
    fn readers_know_the_last_two_files_settled_as_f_even_after_a_settle_cut_short() {
        if !maps() {
            return;
        }
        let (_dir, paths) = bus();
        let writer = LogWriter::open(&paths, 64 << 10).unwrap();
        let reader = reader(&paths);
        let ids: Vec<FileId> = (0..4)
            .map(|n| FileId::of(&staged(&paths, &chunk(n, 10 + n)).metadata().unwrap()))
            .collect();
        assert_eq!(reader.settled(ids[0]), None);
        for (n, id) in ids.iter().enumerate().take(3) {
            let seq = writer.append(&chunk(n, 10), None).unwrap().seq;
            writer.settle(seq, *id);
        }
        // The last two are known, with their records' sequence numbers.
        assert_eq!(reader.settled(ids[0]), None);
        assert_eq!(reader.settled(ids[1]), Some(2));
        assert_eq!(reader.settled(ids[2]), Some(3));
        assert_eq!(reader.settled(FileId::default()), None);
        // A producer killed while it rewrote a slot (the seqlock left odd,
        // the slot half written): the other slot, the newest, stays known.
        let even = writer.map.load(OFF_FGEN, Ordering::Relaxed).unwrap();
        writer.map.store(OFF_FGEN, even + 1, Ordering::Relaxed);
        let half = OFF_FSLOTS + (even / 2 + 1) as usize % 2 * FSLOT;
        writer.map.store(half, 99, Ordering::Relaxed);
        assert_eq!(reader.settled(ids[2]), Some(3));
        assert_eq!(reader.settled(ids[1]), None);
        // The next producer finishes the seqlock and goes on.
        writer.settle(4, ids[3]);
        assert_eq!(reader.settled(ids[3]), Some(4));
        assert_eq!(reader.settled(ids[2]), Some(3));
        assert_eq!(writer.map.load(OFF_FGEN, Ordering::Relaxed), Some(even + 2));
    }

    /// A newcomer's latest value: the newest record when its chunk is not
    /// in `F` yet (the record replaced the `F` there now: its rename is put
    /// off), else what `F` names, the log starting after its records.
    #[test]
    fn a_reader_attaching_starts_at_a_record_whose_rename_is_still_to_come() {
        if !maps() {
            return;
        }
        let (_dir, paths) = bus();
        std::fs::write(paths.data(), b"first").unwrap();
        let writer = LogWriter::open(&paths, 64 << 10).unwrap();
        append(&writer, b"first");
        let first = current_file(paths.data());
        writer.append(b"second", first).unwrap();
        let attach = |f: Option<FileId>| {
            LogReader::attach(&log_path(&paths), |_| true, |replaces| Some(replaces) == f)
                .unwrap()
                .expect("a log")
        };
        let mut newcomer = attach(current_file(paths.data()));
        assert_eq!(data(newcomer.next()), (b"second".to_vec(), 0));
        assert!(matches!(newcomer.next(), Next::Nothing));
        // Once `F` names the second chunk, a newcomer takes it from `F`.
        let second = paths.dir().join("second");
        std::fs::write(&second, b"second").unwrap();
        std::fs::rename(&second, paths.data()).unwrap();
        let mut newcomer = attach(current_file(paths.data()));
        assert!(matches!(newcomer.next(), Next::Nothing));
    }

    #[test]
    fn a_lapped_reader_skips_to_the_newest_and_counts_what_it_skipped() {
        if !maps() {
            return;
        }
        let (_dir, paths) = bus();
        let writer = LogWriter::open(&paths, 64 << 10).unwrap();
        let mut reader = reader(&paths);
        append(&writer, &chunk(0, 3000));
        assert_eq!(data(reader.next()).1, 0);
        for n in 1..=100 {
            append(&writer, &chunk(n, 3000));
        }
        assert_eq!(data(reader.next()), (chunk(100, 3000), 99));
        assert_eq!(reader.next(), Next::Nothing);
    }

    #[test]
    fn a_record_overwritten_while_it_is_copied_is_not_delivered() {
        if !maps() {
            return;
        }
        let (_dir, paths) = bus();
        let writer = LogWriter::open(&paths, 64 << 10).unwrap();
        let mut reader = reader(&paths);
        for n in 0..3 {
            append(&writer, &chunk(n, 1000));
        }
        // The claim says a writer is overwriting the first record (at 0)
        // but not the newest.
        let claim = 64u64 << 10 | 128;
        poke(&paths, OFF_CLAIM as u64, &claim.to_ne_bytes());
        assert_eq!(data(reader.next()), (chunk(2, 1000), 2));
    }

    #[test]
    fn records_stay_whole_under_a_concurrent_writer() {
        if !maps() {
            return;
        }
        let (_dir, paths) = bus();
        let writer = LogWriter::open(&paths, 64 << 10).unwrap();
        let mut reader = reader(&paths);
        let writing = std::thread::spawn(move || {
            for n in 0..20_000 {
                writer
                    .append(&chunk(n, 1 + n * 7919 % 16000), None)
                    .unwrap();
            }
        });
        let (mut delivered, mut last) = (0, None);
        while !writing.is_finished() || reader.pending() {
            if let Next::Data { bytes, .. } = reader.next() {
                let n =
                    u64::from_ne_bytes(bytes[..8.min(bytes.len())].try_into().unwrap_or([0; 8]));
                if bytes.len() >= 8 {
                    assert_eq!(bytes, chunk(n as usize, bytes.len()), "torn chunk {n}");
                    assert!(last.is_none_or(|l| n > l), "{n} after {last:?}");
                    last = Some(n);
                }
                delivered += 1;
            }
        }
        writing.join().unwrap();
        assert!(delivered > 0);
    }

    #[test]
    fn hostile_logs_are_refused_never_followed() {
        if !maps() {
            return;
        }
        type Poke = (&'static str, u64, u64);
        let header: &[Poke] = &[
            ("magic", 0, 0),
            ("version", OFF_VERSION as u64, 2),
            ("capacity", OFF_CAPACITY as u64, 1 << 30),
            ("capacity", OFF_CAPACITY as u64, 100),
        ];
        for &(what, off, value) in header {
            let (_dir, paths) = bus();
            let writer = LogWriter::open(&paths, 64 << 10).unwrap();
            append(&writer, b"chunk");
            poke(&paths, off, &value.to_ne_bytes());
            assert!(
                LogReader::attach(&log_path(&paths), |_| true, |_| false).is_err(),
                "{what}"
            );
        }
        // Once attached: values planted in the positions and the records.
        // "three", each record being a header and one 128-byte block.
        let rec = HEADER + 256 * 2;
        let records: &[Poke] = &[
            ("commit not aligned", OFF_COMMIT as u64, 256 + 129),
            (
                "commit far ahead, newest bogus",
                OFF_COMMIT as u64,
                u64::MAX - 127,
            ),
            ("position", rec + R_POS, 12345),
            ("kind", rec + R_KIND_LEN, kind_len(9, 4)),
            ("length", rec + R_KIND_LEN, kind_len(KIND_DATA, u32::MAX)),
            (
                "length past commit",
                rec + R_KIND_LEN,
                kind_len(KIND_DATA, 4000),
            ),
            ("sequence back", rec + R_SEQ, 1),
        ];
        for &(what, off, value) in records {
            let (_dir, paths) = bus();
            let writer = LogWriter::open(&paths, 64 << 10).unwrap();
            append(&writer, b"one");
            append(&writer, b"two");
            let mut reader = reader(&paths);
            append(&writer, b"three");
            poke(&paths, off, &value.to_ne_bytes());
            assert!(
                matches!(reader.next(), Next::Untrusted(_)),
                "{what} was followed"
            );
        }
    }

    #[test]
    fn random_bytes_planted_in_a_log_never_panic_or_hang_a_reader() {
        if !maps() {
            return;
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut random = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..300 {
            let (_dir, paths) = bus();
            let writer = LogWriter::open(&paths, 64 << 10).unwrap();
            let mut reader = reader(&paths);
            for n in 0..(random() % 40) as usize {
                append(&writer, &chunk(n, (random() % 20000) as usize));
            }
            for _ in 0..(1 + random() % 8) {
                // Mostly the positions and the records near them.
                let off = match random() % 3 {
                    0 => random() % 256,
                    1 => HEADER + random() % 4096,
                    _ => random() % (HEADER + (64 << 10)),
                } / 8
                    * 8;
                poke(&paths, off, &random().to_ne_bytes());
            }
            for _ in 0..1000 {
                match reader.next() {
                    Next::Data { bytes, .. } => assert!(bytes.len() <= 16 << 10),
                    Next::InFile { .. } => {}
                    Next::Nothing | Next::Untrusted(_) => break,
                }
            }
        }
    }

    /// A writer appending and a second one planting random words, both
    /// while the reader reads: whatever the reader returns, it returns it
    /// without panicking, and in bounded time.
    #[test]
    fn random_bytes_written_while_a_reader_reads_never_panic_or_hang_it() {
        if !maps() {
            return;
        }
        let (_dir, paths) = bus();
        let writer = LogWriter::open(&paths, 64 << 10).unwrap();
        let mut reader = reader(&paths);
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let vandal = {
            let (paths, done) = (paths.clone(), done.clone());
            std::thread::spawn(move || {
                let file = OpenOptions::new()
                    .write(true)
                    .open(log_path(&paths))
                    .unwrap();
                let mut state = 0x1234_5678_9abc_def1u64;
                while !done.load(Ordering::Relaxed) {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let off = state % (HEADER + (64 << 10)) / 8 * 8;
                    file.write_at(&state.rotate_left(17).to_ne_bytes(), off)
                        .unwrap();
                }
            })
        };
        let mut refused = 0;
        // At least 3000 rounds, and until the vandal was caught once (how
        // soon depends on how the two threads are scheduled).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut n = 0;
        while n < 3000 || (refused == 0 && std::time::Instant::now() < deadline) {
            n += 1;
            // The writer gives up on a log it finds inconsistent; the
            // reader goes on meeting whatever the vandal writes.
            let _ = writer.append(&chunk(n, 1 + n * 131 % 9000), None);
            match reader.next() {
                Next::Data { bytes, .. } => assert!(bytes.len() <= 16 << 10),
                Next::Untrusted(_) => {
                    refused += 1;
                    reader = super::LogReader::attach(&log_path(&paths), |_| true, |_| false)
                        .ok()
                        .flatten()
                        .unwrap_or(reader);
                }
                _ => {}
            }
        }
        done.store(true, Ordering::Relaxed);
        vandal.join().unwrap();
        assert!(refused > 0, "the vandal went unnoticed");
    }

    #[test]
    fn what_a_writer_killed_mid_append_leaves_is_never_read_and_the_next_one_goes_on() {
        if !maps() {
            return;
        }
        let (_dir, paths) = bus();
        let writer = LogWriter::open(&paths, 64 << 10).unwrap();
        append(&writer, b"whole");
        let mut reader = reader(&paths);
        let commit: u64 = 256;
        // Killed after its claim and part of its record: bytes past commit.
        let claim = commit + 128 * 40;
        poke(&paths, OFF_CLAIM as u64, &claim.to_ne_bytes());
        poke(&paths, HEADER + commit, &[0xee; 3000]);
        assert_eq!(reader.next(), Next::Nothing);
        drop(writer);
        let next = LogWriter::open(&paths, 64 << 10).unwrap();
        append(&next, b"after");
        assert_eq!(data(reader.next()), (b"after".to_vec(), 0));
        let (claim_now, _, _) = next.positions().unwrap();
        assert_eq!(claim_now, claim, "the claim was lowered");
    }

    #[test]
    fn a_log_truncated_under_a_reader_and_a_writer_is_left_not_fatal() {
        if !maps() {
            return;
        }
        for keep in [0, HEADER, HEADER + 4096] {
            let (_dir, paths) = bus();
            let writer = LogWriter::open(&paths, 64 << 10).unwrap();
            let mut reader = reader(&paths);
            for n in 0..10 {
                append(&writer, &chunk(n, 3000));
            }
            OpenOptions::new()
                .write(true)
                .open(log_path(&paths))
                .unwrap()
                .set_len(keep)
                .unwrap();
            // The records past the new end fault (SIGBUS) when read.
            let mut untrusted = false;
            for _ in 0..20 {
                match reader.next() {
                    Next::Untrusted(_) => {
                        untrusted = true;
                        break;
                    }
                    Next::Nothing => break,
                    _ => {}
                }
            }
            assert!(untrusted, "kept {keep}: the reader went on");
            assert!(writer.append(b"x", None).is_err());
        }
    }

    #[test]
    fn identities_tell_the_files_apart() {
        let (_dir, paths) = bus();
        let a = staged(&paths, b"a");
        let b = staged(&paths, b"b");
        let id = |f: &File| FileId::of(&f.metadata().unwrap());
        assert_ne!(id(&a), id(&b));
        assert_eq!(id(&a), id(&a));
        assert!(FileId::default().is_none() && !id(&a).is_none());
    }
}
