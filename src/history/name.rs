//! How a history entry is named: its sequence number in 20 zero-padded
//! digits, so that names sort in publication order and every `u64` fits.
//! Producers, consumers and `filebus status` must agree on it exactly, and
//! on what is not an entry.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// Digits in a history entry name: enough for every `u64`.
pub(super) const NAME_DIGITS: usize = 20;

/// The file name of the history entry for sequence number `seq`.
pub(super) fn entry_name(seq: u64) -> String {
    format!("{seq:0NAME_DIGITS$}")
}

/// The sequence number a history entry name stands for, if it is one.
pub(super) fn parse_entry_name(name: &OsStr) -> Option<u64> {
    let bytes = name.as_bytes();
    if bytes.len() != NAME_DIGITS || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(bytes)
        .ok()?
        .parse()
        .ok()
        .filter(|&seq| seq > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_twenty_zero_padded_digits() {
        assert_eq!(entry_name(42), "00000000000000000042");
        assert_eq!(entry_name(1).len(), NAME_DIGITS);
        assert_eq!(entry_name(u64::MAX), "18446744073709551615");
    }

    #[test]
    fn names_sort_in_sequence_order() {
        let mut names: Vec<String> = [10, 9, 100, 1, 99].map(entry_name).into();
        names.sort();
        let seqs: Vec<u64> = names
            .iter()
            .map(|n| parse_entry_name(OsStr::new(n)).unwrap())
            .collect();
        assert_eq!(seqs, [1, 9, 10, 99, 100]);
    }

    #[test]
    fn parsing_round_trips() {
        for seq in [1, 7, 1_000_000, u64::MAX] {
            assert_eq!(parse_entry_name(OsStr::new(&entry_name(seq))), Some(seq));
        }
    }

    #[test]
    fn parsing_rejects_other_names() {
        for name in [
            "42",
            "00000000000000000000",
            "0000000000000000004x",
            "000000000000000000042",
            "+0000000000000000042",
            "18446744073709551616",
            "99999999999999999999",
            "",
            ".tmp",
        ] {
            assert_eq!(parse_entry_name(OsStr::new(name)), None, "{name}");
        }
    }
}
