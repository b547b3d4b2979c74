//! A file mapped into memory and shared with other processes: the
//! shared-memory log's storage (see `crate::shm_log`). Every access goes
//! through this type, so that the `unsafe` a mapping needs stays here: words
//! are read and written as atomics (another process writes them
//! concurrently, and a plain read could tear), every offset is checked
//! against the mapping's length, and a mapping that lost its file under it
//! (truncated by someone else: the access would raise SIGBUS) reads as zeros
//! instead of killing the process (see `guard` in `linux.rs`).

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

/// A shared mapping of the first `len` bytes of a file; unmapped on drop.
#[derive(Debug)]
pub(crate) struct SharedMap {
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
    /// The SIGBUS guard's slot for this mapping.
    slot: usize,
}

// SAFETY: the mapping is process-wide memory owned by this value alone;
// every access through it is an atomic or a system call.
unsafe impl Send for SharedMap {}

// SAFETY: as above; concurrent access from several threads is no different
// from the concurrent access of other processes that every method allows
// for already: words are atomics, and copies in and out (`read_into`,
// `write_from`) are of bytes that may change under them, checked by the
// log's protocol, never trusted.
unsafe impl Sync for SharedMap {}

impl SharedMap {
    /// Only the Linux path maps anything (`linux::map`).
    #[cfg_attr(not(target_os = "linux"), expect(dead_code))]
    pub(super) fn new(ptr: NonNull<u8>, len: usize, writable: bool, slot: usize) -> Self {
        SharedMap {
            ptr,
            len,
            writable,
            slot,
        }
    }

    /// Whether the file was truncated under the mapping: it reads as zeros
    /// from the first fault on.
    pub(crate) fn broken(&self) -> bool {
        super::native::guard_hit(self.slot)
    }

    /// The 8-byte word at `off`, or `None` when `off` is not 8-aligned or
    /// the word is not inside the mapping.
    fn word(&self, off: usize) -> Option<&AtomicU64> {
        if !off.is_multiple_of(8) || off.checked_add(8)? > self.len {
            return None;
        }
        // SAFETY: the word is inside the mapping (checked above), which
        // lives as long as `self`, and 8-aligned (mappings start on a page);
        // AtomicU64 has the layout of u64. Another process may write it at
        // any time, which atomics allow. The guard turns a fault (file
        // truncated) into zero pages.
        Some(unsafe { &*self.ptr.as_ptr().add(off).cast::<AtomicU64>() })
    }

    /// Loads the word at `off`; `None` outside the mapping or unaligned.
    pub(crate) fn load(&self, off: usize, order: Ordering) -> Option<u64> {
        self.word(off).map(|w| w.load(order))
    }

    /// Stores `value` at `off`; `false` outside the mapping, unaligned or
    /// on a read-only mapping (which would fault).
    pub(crate) fn store(&self, off: usize, value: u64, order: Ordering) -> bool {
        match self.word(off) {
            Some(w) if self.writable => {
                w.store(value, order);
                true
            }
            _ => false,
        }
    }

    /// The words covering `len` bytes from `off`, or `None` when `off` is
    /// not 8-aligned or they do not lie inside the mapping.
    fn words(&self, off: usize, len: usize) -> Option<&[AtomicU64]> {
        let words = len.div_ceil(8);
        let end = words.checked_mul(8)?.checked_add(off)?;
        if !off.is_multiple_of(8) || end > self.len {
            return None;
        }
        // SAFETY: as in `word`, for each of the `words` words from `off`,
        // all inside the mapping (checked above).
        Some(unsafe {
            std::slice::from_raw_parts(self.ptr.as_ptr().add(off).cast::<AtomicU64>(), words)
        })
    }

    /// Appends `len` bytes from `off` (8-aligned) to `out`. Another process
    /// may be writing them meanwhile: the caller checks afterwards (the
    /// log's claim, after an Acquire fence) that nobody was, and drops the
    /// copy otherwise. `false`, copying nothing, when the bytes do not lie
    /// inside the mapping.
    pub(crate) fn read_into(&self, off: usize, len: usize, out: &mut Vec<u8>) -> bool {
        if self.words(off, len).is_none() {
            return false;
        }
        out.reserve(len);
        let base = out.len();
        // SAFETY: [off, off + len) lies inside the mapping (checked above),
        // which lives as long as `self`; `out` has room for `len` more bytes
        // (reserved above), which are initialised before the length covers
        // them. The source may change under the copy (the seqlock pattern:
        // a byte has no invalid value, and what was torn is detected after
        // and thrown away); a plain copy is what lets a reader keep up with
        // a writer, where word-by-word atomic loads copy at a third of the
        // speed. The guard turns a fault (file truncated) into zero pages.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(off),
                out.as_mut_ptr().add(base),
                len,
            );
            out.set_len(base + len);
        }
        true
    }

    /// Copies `bytes` into the mapping at `off` (8-aligned). Readers in
    /// other processes may copy them meanwhile: they check afterwards that
    /// nobody was writing what they copied (the log's claim, moved before
    /// this with a Release fence). `false`, writing nothing, when they do
    /// not lie inside the mapping or it is read-only.
    pub(crate) fn write_from(&self, off: usize, bytes: &[u8]) -> bool {
        if !self.writable || self.words(off, bytes.len()).is_none() {
            return false;
        }
        // SAFETY: [off, off + len) lies inside the writable mapping
        // (checked above), which lives as long as `self` and never overlaps
        // `bytes` (a slice of this process's own memory). Readers copying
        // it meanwhile throw away what they copied (see `read_into`).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.as_ptr().add(off), bytes.len());
        }
        true
    }
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        super::native::unmap(self.ptr, self.len, self.slot);
    }
}
