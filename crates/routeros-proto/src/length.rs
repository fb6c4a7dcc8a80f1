//! Word-length prefixes (`docs/reference/routeros-api.md` §1.1).
//!
//! | length                      | bytes | encoding                 |
//! |-----------------------------|-------|--------------------------|
//! | `0x00 ..= 0x7F`             | 1     | `len`                    |
//! | `0x80 ..= 0x3FFF`           | 2     | `len \| 0x8000`          |
//! | `0x4000 ..= 0x1F_FFFF`      | 3     | `len \| 0xC0_0000`       |
//! | `0x20_0000 ..= 0x0FFF_FFFF` | 4     | `len \| 0xE000_0000`     |
//! | `0x1000_0000 ..= u32::MAX`  | 5     | `0xF0`, then 4 bytes     |
//!
//! A first byte `>= 0xF8` is a reserved control byte and cannot be continued past. First bytes
//! `0xF1 ..= 0xF7` would encode lengths beyond 32 bits, which RouterOS does not support, so they
//! are rejected too (go-routeros reads them as the 5-byte form and ignores the low bits; we prefer
//! a clear error over a silently different length).

use thiserror::Error;

/// The largest length any form can carry.
pub const MAX_LENGTH: u32 = u32::MAX;

/// A length prefix that cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum LengthError {
    /// The first byte is `0xF8..=0xFF`: a reserved control byte (`docs/reference/routeros-api.md` §1.1).
    #[error("reserved control byte 0x{0:02X} where a word length was expected")]
    ControlByte(u8),
    /// The first byte is `0xF1..=0xF7`: a length wider than 32 bits.
    #[error("word length prefix 0x{0:02X} encodes a length wider than 32 bits")]
    TooWide(u8),
}

/// Appends the encoded form of `len` to `out`, using the shortest form.
pub fn encode_len(len: u32, out: &mut Vec<u8>) {
    match len {
        0..=0x7F => out.push(len as u8),
        0x80..=0x3FFF => out.extend_from_slice(&((len | 0x8000) as u16).to_be_bytes()),
        0x4000..=0x1F_FFFF => out.extend_from_slice(&(len | 0xC0_0000).to_be_bytes()[1..]),
        0x20_0000..=0x0FFF_FFFF => out.extend_from_slice(&(len | 0xE000_0000).to_be_bytes()),
        _ => {
            out.push(0xF0);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
}

/// Number of bytes the encoded form of `len` takes.
pub fn encoded_len_size(len: u32) -> usize {
    match len {
        0..=0x7F => 1,
        0x80..=0x3FFF => 2,
        0x4000..=0x1F_FFFF => 3,
        0x20_0000..=0x0FFF_FFFF => 4,
        _ => 5,
    }
}

/// How many bytes the whole prefix takes, judged from its first byte.
pub fn prefix_size(first: u8) -> Result<usize, LengthError> {
    match first {
        0x00..=0x7F => Ok(1),
        0x80..=0xBF => Ok(2),
        0xC0..=0xDF => Ok(3),
        0xE0..=0xEF => Ok(4),
        0xF0 => Ok(5),
        0xF1..=0xF7 => Err(LengthError::TooWide(first)),
        _ => Err(LengthError::ControlByte(first)),
    }
}

/// Decodes a length prefix at the start of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of the prefix (a prefix may be split across
/// reads), or `Ok(Some((len, prefix_bytes)))`.
pub fn decode_len(buf: &[u8]) -> Result<Option<(u32, usize)>, LengthError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let size = prefix_size(first)?;
    let Some(prefix) = buf.get(..size) else {
        return Ok(None);
    };
    let len = match *prefix {
        [b0] => u32::from(b0),
        [b0, b1] => u32::from_be_bytes([0, 0, b0 & 0x3F, b1]),
        [b0, b1, b2] => u32::from_be_bytes([0, b0 & 0x1F, b1, b2]),
        [b0, b1, b2, b3] => u32::from_be_bytes([b0 & 0x0F, b1, b2, b3]),
        [_, b1, b2, b3, b4] => u32::from_be_bytes([b1, b2, b3, b4]),
        // prefix_size only returns 1..=5.
        _ => unreachable!("prefix_size returned {size}"),
    };
    Ok(Some((len, size)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(len: u32) -> Vec<u8> {
        let mut v = Vec::new();
        encode_len(len, &mut v);
        v
    }

    /// Every vector of `docs/reference/routeros-api.md` §1.2, both directions.
    #[test]
    fn reference_vectors_round_trip() {
        let vectors: &[(u32, &[u8])] = &[
            (0, &[0x00]),
            (1, &[0x01]),
            (0x7F, &[0x7F]),
            (0x80, &[0x80, 0x80]),
            (0x82, &[0x80, 0x82]),
            (0x87, &[0x80, 0x87]),
            (0x100, &[0x81, 0x00]),
            (0x3FFF, &[0xBF, 0xFF]),
            (0x4000, &[0xC0, 0x40, 0x00]),
            (0x4321, &[0xC0, 0x43, 0x21]),
            (0x1F_FFF4, &[0xDF, 0xFF, 0xF4]),
            (0x1F_FFFF, &[0xDF, 0xFF, 0xFF]),
            (0x20_0000, &[0xE0, 0x20, 0x00, 0x00]),
            (0x2A_CDEF, &[0xE0, 0x2A, 0xCD, 0xEF]),
            (0xFFF_FFF0, &[0xEF, 0xFF, 0xFF, 0xF0]),
            (0xFFF_FFFF, &[0xEF, 0xFF, 0xFF, 0xFF]),
            (0x1000_0000, &[0xF0, 0x10, 0x00, 0x00, 0x00]),
            (0x1000_0080, &[0xF0, 0x10, 0x00, 0x00, 0x80]),
            (u32::MAX, &[0xF0, 0xFF, 0xFF, 0xFF, 0xFF]),
        ];
        for &(len, bytes) in vectors {
            assert_eq!(enc(len), bytes, "encode {len:#x}");
            assert_eq!(encoded_len_size(len), bytes.len(), "size {len:#x}");
            assert_eq!(
                decode_len(bytes),
                Ok(Some((len, bytes.len()))),
                "decode {len:#x}"
            );
            // Trailing bytes are not part of the prefix.
            let mut longer = bytes.to_vec();
            longer.extend_from_slice(&[0xAA, 0xBB]);
            assert_eq!(decode_len(&longer), Ok(Some((len, bytes.len()))));
        }
    }

    #[test]
    fn prefix_sizes_from_first_byte() {
        // librouteros `determine_length`: 0x78 → 0 extra, 0xbf → 1, 0xdf → 2, 0xef → 3.
        assert_eq!(prefix_size(0x78), Ok(1));
        assert_eq!(prefix_size(0xBF), Ok(2));
        assert_eq!(prefix_size(0xDF), Ok(3));
        assert_eq!(prefix_size(0xEF), Ok(4));
        assert_eq!(prefix_size(0xF0), Ok(5));
    }

    #[test]
    fn rejects_first_byte_f8_and_above() {
        for b in 0xF8..=0xFF {
            assert_eq!(decode_len(&[b]), Err(LengthError::ControlByte(b)));
        }
        assert_eq!(
            decode_len(&[0xFF, 0xFF, 0xFF, 0xFF, 0xFF]),
            Err(LengthError::ControlByte(0xFF))
        );
    }

    #[test]
    fn rejects_lengths_wider_than_32_bits() {
        for b in 0xF1..=0xF7 {
            assert_eq!(decode_len(&[b, 0, 0, 0, 0]), Err(LengthError::TooWide(b)));
        }
    }

    #[test]
    fn partial_prefix_needs_more_bytes() {
        assert_eq!(decode_len(&[]), Ok(None));
        assert_eq!(decode_len(&[0x80]), Ok(None));
        assert_eq!(decode_len(&[0xC0, 0x40]), Ok(None));
        assert_eq!(decode_len(&[0xE0, 0x20, 0x00]), Ok(None));
        assert_eq!(decode_len(&[0xF0, 0x10, 0x00, 0x00]), Ok(None));
    }

    #[test]
    fn non_minimal_prefixes_decode() {
        // RouterOS never sends these, but they are unambiguous; other clients accept them too.
        assert_eq!(decode_len(&[0x80, 0x05]), Ok(Some((5, 2))));
        assert_eq!(decode_len(&[0xF0, 0, 0, 0, 5]), Ok(Some((5, 5))));
    }
}
