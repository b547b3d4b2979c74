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

    /// Copies `len` bytes from `off` (8-aligned) into `out`, word by word
    /// (Relaxed loads: the caller checks afterwards that nobody overwrote
    /// them meanwhile). `false`, copying nothing, when the words needed do
    /// not lie inside the mapping.
    pub(crate) fn read_into(&self, off: usize, len: usize, out: &mut Vec<u8>) -> bool {
        let words = len.div_ceil(8);
        let fits = words
            .checked_mul(8)
            .and_then(|n| n.checked_add(off))
            .is_some_and(|end| end <= self.len);
        if !off.is_multiple_of(8) || !fits {
            return false;
        }
        out.clear();
        out.reserve(words * 8);
        for i in 0..words {
            let w = self.word(off + i * 8).expect("checked above");
            out.extend_from_slice(&w.load(Ordering::Relaxed).to_ne_bytes());
        }
        out.truncate(len);
        true
    }

    /// Copies `bytes` into the mapping at `off` (8-aligned), word by word
    /// (Relaxed stores: readers check afterwards that nobody was writing
    /// what they copied), the last word padded with zeros. `false`, writing
    /// nothing, when the words do not lie inside the mapping or it is
    /// read-only.
    pub(crate) fn write_from(&self, off: usize, bytes: &[u8]) -> bool {
        let fits = bytes
            .len()
            .div_ceil(8)
            .checked_mul(8)
            .and_then(|n| n.checked_add(off))
            .is_some_and(|end| end <= self.len);
        if !self.writable || !off.is_multiple_of(8) || !fits {
            return false;
        }
        for (i, piece) in bytes.chunks(8).enumerate() {
            let mut word = [0u8; 8];
            word[..piece.len()].copy_from_slice(piece);
            let w = self.word(off + i * 8).expect("checked above");
            w.store(u64::from_ne_bytes(word), Ordering::Relaxed);
        }
        true
    }
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        super::native::unmap(self.ptr, self.len, self.slot);
    }
}
