//! Fuzzes the chunker with arbitrary input arriving in arbitrary pieces:
//! whatever the timing, the chunks are the input, in order, each non-empty
//! and at most a block, and in line mode cut only at newlines unless a
//! block is full or input ended.

#![no_main]

use std::io;

use filebus::{Chunker, Chunking, Source};
use libfuzzer_sys::fuzz_target;

/// Input delivered in pieces; a piece flagged "late" has not arrived when
/// the chunker asks whether a read would block.
struct Pieces {
    pieces: Vec<(Vec<u8>, bool)>,
}

impl Source for Pieces {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some((piece, late)) = self.pieces.first_mut() else {
            return Ok(0);
        };
        let n = piece.len().min(buf.len());
        buf[..n].copy_from_slice(&piece[..n]);
        piece.drain(..n);
        *late = false;
        if piece.is_empty() {
            self.pieces.remove(0);
        }
        Ok(n)
    }

    fn ready(&mut self) -> io::Result<bool> {
        Ok(self.pieces.first().is_none_or(|(_, late)| !late))
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, block, script @ ..] = data else {
        return;
    };
    let mode = if mode & 1 == 0 {
        Chunking::Bytes
    } else {
        Chunking::Lines
    };
    let block_size = usize::from(*block % 64) + 1;
    // The script: a header byte (piece length, lateness), then the piece.
    let mut pieces = Vec::new();
    let mut input = Vec::new();
    let mut rest = script;
    while let [header, tail @ ..] = rest {
        let len = usize::from(header & 0x3f).min(tail.len());
        if len > 0 {
            pieces.push((tail[..len].to_vec(), header & 0x40 != 0));
            input.extend_from_slice(&tail[..len]);
        }
        rest = &tail[len..];
    }

    let mut chunker = Chunker::new(Pieces { pieces }, mode, block_size);
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    while let Some(chunk) = chunker.next_chunk().unwrap() {
        assert!(!chunk.is_empty(), "empty chunk");
        assert!(chunk.len() <= block_size, "chunk larger than a block");
        chunks.push(chunk.to_vec());
    }
    assert_eq!(chunks.concat(), input, "chunks are not the input");
    if mode == Chunking::Lines {
        if let Some((_, all_but_last)) = chunks.split_last() {
            for chunk in all_but_last {
                assert!(
                    chunk.ends_with(b"\n") || chunk.len() == block_size,
                    "line split without need: {chunk:?}"
                );
            }
        }
    }
});
