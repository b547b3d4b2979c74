//! What the tests publish and how they check what came out. Records and
//! frames carry a checksum of their own identity, so a torn, mixed or
//! foreign one is detected wherever it shows up, without knowing where it
//! was expected; records are lines for the line-cutting modes, frames are
//! blocks of any size up to megabytes. [`chunk`]s are for sizes too small
//! to carry a checksum (down to one byte): they can only be checked
//! against the chunks sent ([`check_exactly_once`]).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// Length of every record, newline included: a divisor of the default
/// block size (4096) and of 1 MiB, so that a byte-mode producer reading
/// full blocks from a regular file never splits a record; with another
/// block size, use a multiple of it.
pub const RECORD_LEN: usize = 32;

/// Room for the tag, which is padded with [`PAD`] to this width (the
/// padding is written out in [`record`]'s format string).
const TAG_LEN: usize = 7;
const PAD: char = '_';

/// FNV-1a: a checksum that any changed, missing or moved byte alters.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One step of the xorshift generator that fills frames and chunks and
/// picks random moments: cheap, and the same sequence for the same seed.
pub fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// `len` bytes that are a function of `seed` and their position only.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len).map(|_| xorshift(&mut x) as u8).collect()
}

/// The `i`th record tagged `tag` (1 to 7 bytes, no `_`):
/// `tag____:00000000000123:0123abcd\n`, the tag, the sequence number and a
/// checksum of both, [`RECORD_LEN`] bytes.
pub fn record(tag: &str, i: usize) -> String {
    assert!(
        (1..=TAG_LEN).contains(&tag.len()) && !tag.contains(PAD) && !tag.contains('\n'),
        "a record tag is 1 to {TAG_LEN} bytes without {PAD:?}: {tag:?}"
    );
    let key = format!("{tag:_<width$}:{i:014}", width = TAG_LEN);
    let line = format!("{key}:{:08x}\n", fnv(key.as_bytes()) as u32);
    debug_assert_eq!(line.len(), RECORD_LEN);
    line
}

/// Writes records `0..count` of `tag` to `path`.
pub fn write_records(path: &Path, tag: &str, count: usize) {
    let mut f = BufWriter::new(File::create(path).unwrap());
    for i in 0..count {
        f.write_all(record(tag, i).as_bytes()).unwrap();
    }
    f.flush().unwrap();
}

/// A record's identity: its tag and sequence number.
pub type Key = (String, usize);

/// Parses a consumer's output into records, checking each one. A torn
/// record is an error, except at the very end when `torn_tail_ok` (the
/// output of a consumer killed in the middle of a write).
pub fn parse_records(bytes: &[u8], torn_tail_ok: bool) -> Result<Vec<Key>, String> {
    let mut out = Vec::with_capacity(bytes.len() / RECORD_LEN);
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            if torn_tail_ok && rest.len() < RECORD_LEN {
                break;
            }
            return Err(format!(
                "torn record at the end: {:?}",
                String::from_utf8_lossy(rest)
            ));
        };
        let line = &rest[..=nl];
        rest = &rest[nl + 1..];
        let bad = || format!("torn or foreign record {:?}", String::from_utf8_lossy(line));
        if line.len() != RECORD_LEN {
            return Err(bad());
        }
        let text = std::str::from_utf8(line).map_err(|_| bad())?;
        let tag = text[..TAG_LEN].trim_end_matches(PAD);
        let i: usize = text[TAG_LEN + 1..TAG_LEN + 15].parse().map_err(|_| bad())?;
        if tag.is_empty() || tag.contains(PAD) || record(tag, i) != text {
            return Err(bad());
        }
        out.push((tag.to_string(), i));
    }
    Ok(out)
}

/// Reads a file of records, failing the test on a torn, mixed or foreign
/// one; returns the records without their newlines.
pub fn read_records(path: &Path) -> Vec<String> {
    let data = std::fs::read_to_string(path).unwrap();
    if let Err(e) = parse_records(data.as_bytes(), false) {
        panic!("{}: {e}", path.display());
    }
    data.split_terminator('\n').map(str::to_owned).collect()
}

/// Counts how often each record occurs.
pub fn tally<'a>(outputs: impl IntoIterator<Item = &'a [Key]>) -> HashMap<Key, usize> {
    let mut seen = HashMap::new();
    for keys in outputs {
        for key in keys {
            *seen.entry(key.clone()).or_insert(0) += 1;
        }
    }
    seen
}

/// The records of `tags`, `0..count` each, that occur zero times in `seen`.
pub fn missing(seen: &HashMap<Key, usize>, tags: &[String], count: usize) -> Vec<Key> {
    tags.iter()
        .flat_map(|t| (0..count).map(move |i| (t.clone(), i)))
        .filter(|k| !seen.contains_key(k))
        .collect()
}

/// Length of a frame's header, `FRAME 0000000123 0123456789abcdef\n`.
const FRAME_HEADER: usize = 34;

/// A frame: a self-checking block of exactly `size` bytes (at least
/// [`FRAME_HEADER`]), so that a reader can tell a whole published chunk
/// from a torn one.
pub fn frame(seq: u64, size: usize) -> Vec<u8> {
    let body = noise(seq, size - FRAME_HEADER);
    let mut out = format!("FRAME {seq:010} {:016x}\n", fnv(&body)).into_bytes();
    assert_eq!(out.len(), FRAME_HEADER);
    out.extend_from_slice(&body);
    out
}

/// Checks that `bytes` is exactly one whole frame of `size` bytes and
/// returns its sequence number.
pub fn check_frame(bytes: &[u8], size: usize) -> Result<u64, String> {
    if bytes.len() != size {
        return Err(format!("chunk of {} bytes, frames are {size}", bytes.len()));
    }
    let header =
        std::str::from_utf8(&bytes[..FRAME_HEADER]).map_err(|_| "bad header".to_string())?;
    let seq: u64 = header[6..16]
        .parse()
        .map_err(|_| format!("bad header {header:?}"))?;
    let sum = u64::from_str_radix(&header[17..33], 16).map_err(|_| "bad sum".to_string())?;
    if fnv(&bytes[FRAME_HEADER..]) != sum {
        return Err(format!("frame {seq} is torn: checksum mismatch"));
    }
    Ok(seq)
}

/// Writes frames `first..first + count` to `path`.
pub fn write_frames(path: &Path, first: u64, count: u64, size: usize) {
    let mut f = BufWriter::new(File::create(path).unwrap());
    for seq in first..first + count {
        f.write_all(&frame(seq, size)).unwrap();
    }
    f.flush().unwrap();
}

/// The sequence numbers of the frames of `size` bytes in the file at
/// `path`, failing the test on a torn one.
pub fn frames_in(path: &Path, size: usize) -> Vec<u64> {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(
        bytes.len() % size,
        0,
        "{}: not whole frames",
        path.display()
    );
    bytes
        .chunks(size)
        .map(|c| check_frame(c, size).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

/// [`frames_in`], failing the test when a frame occurs twice.
pub fn frames_once(path: &Path, size: usize) -> Vec<u64> {
    let frames = frames_in(path, size);
    let unique: std::collections::HashSet<_> = frames.iter().collect();
    assert_eq!(
        unique.len(),
        frames.len(),
        "{}: a frame was delivered twice: {frames:?}",
        path.display()
    );
    frames
}

/// Chunk `i` of `size` bytes. Chunks of 8 bytes or more start with their
/// number; every byte after it is a function of the number and position,
/// so a chunk can be told from any other and a torn one is seen.
pub fn chunk(i: usize, size: usize) -> Vec<u8> {
    let mut out = noise(i as u64, size);
    if size >= 8 {
        out[..8].copy_from_slice(&(i as u64).to_le_bytes());
    } else if size > 0 {
        out[0] = (i % 251) as u8;
    }
    out
}

/// Writes chunks `0..count` of `size` bytes to `path` and returns them.
pub fn write_chunks(path: &Path, size: usize, count: usize) -> Vec<Vec<u8>> {
    let chunks: Vec<Vec<u8>> = (0..count).map(|i| chunk(i, size)).collect();
    let mut f = BufWriter::new(File::create(path).unwrap());
    for c in &chunks {
        f.write_all(c).unwrap();
    }
    f.flush().unwrap();
    chunks
}

/// Checks that `outputs` together hold every one of `chunks` exactly once,
/// each whole, and each output in publication order (one producer, so a
/// consumer's chunks come in order). That holds when the chunk sequence is
/// an interleaving of the outputs cut into chunks, which is what this
/// decides, for one or two outputs.
pub fn check_exactly_once(chunks: &[Vec<u8>], outputs: &[&[u8]]) -> Result<(), String> {
    let size = chunks.first().map_or(1, Vec::len);
    let total: usize = outputs.iter().map(|o| o.len()).sum();
    if total != chunks.len() * size {
        return Err(format!(
            "{} bytes delivered in all, {} sent",
            total,
            chunks.len() * size
        ));
    }
    let cut = |o: &[u8]| -> Result<Vec<Vec<u8>>, String> {
        if !o.len().is_multiple_of(size) {
            return Err(format!("an output of {} bytes holds a torn chunk", o.len()));
        }
        Ok(o.chunks(size).map(<[u8]>::to_vec).collect())
    };
    match outputs {
        [one] => {
            if cut(one)? == chunks {
                Ok(())
            } else {
                Err("the output differs from the chunks sent".into())
            }
        }
        [a, b] => {
            let (a, b) = (cut(a)?, cut(b)?);
            // reach[j] after row i: the first i + j chunks are the first
            // i of `a` interleaved with the first j of `b`.
            let mut reach = vec![false; b.len() + 1];
            for i in 0..=a.len() {
                for j in 0..=b.len() {
                    reach[j] = if i == 0 && j == 0 {
                        true
                    } else {
                        let k = i + j - 1;
                        (i > 0 && reach[j] && a[i - 1] == chunks[k])
                            || (j > 0 && reach[j - 1] && b[j - 1] == chunks[k])
                    };
                }
            }
            if reach[b.len()] {
                Ok(())
            } else {
                Err(format!(
                    "outputs of {} and {} chunks are not an exact split of the {} sent",
                    a.len(),
                    b.len(),
                    chunks.len()
                ))
            }
        }
        _ => unimplemented!("one or two outputs"),
    }
}
