//! Incremental sentence decoder: bytes in, [`Sentence`]s out.

use thiserror::Error;

use crate::length::{LengthError, decode_len};
use crate::sentence::Sentence;

/// Bounds that keep a hostile or broken peer from making the decoder allocate without limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted word, in bytes.
    pub max_word: usize,
    /// Largest accepted sentence: the sum of its word bytes (prefixes excluded).
    pub max_sentence: usize,
    /// Most words accepted in one sentence.
    pub max_words: usize,
}

impl Default for Limits {
    /// Generous for address-list traffic: a row is a few hundred bytes; comments are short.
    fn default() -> Self {
        Self {
            max_word: 64 * 1024,
            max_sentence: 1024 * 1024,
            max_words: 4096,
        }
    }
}

/// The byte stream cannot be decoded. The stream is out of sync after any of these: the
/// connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A length prefix could not be read.
    #[error(transparent)]
    Length(#[from] LengthError),
    /// A word is longer than [`Limits::max_word`].
    #[error("word of {len} bytes exceeds the limit of {max} bytes")]
    WordTooLong {
        /// Declared length.
        len: u64,
        /// The limit in force.
        max: usize,
    },
    /// A sentence is larger than [`Limits::max_sentence`].
    #[error("sentence exceeds the limit of {max} bytes")]
    SentenceTooLong {
        /// The limit in force.
        max: usize,
    },
    /// A sentence has more than [`Limits::max_words`] words.
    #[error("sentence exceeds the limit of {max} words")]
    TooManyWords {
        /// The limit in force.
        max: usize,
    },
    /// A previous error left the stream out of sync.
    #[error("decoder failed earlier; the stream cannot be resynchronised")]
    Poisoned,
}

/// Turns a byte stream into sentences, whatever the chunk boundaries.
///
/// Call order: [`Decoder::feed`] with each chunk read from the transport, then
/// [`Decoder::poll_sentence`] until it returns `Ok(None)`. Feed at most one read buffer between
/// polls: the decoder holds at most one partial word (bounded by [`Limits::max_word`]) beyond what
/// was fed and not yet polled.
///
/// ```
/// use routeros_proto::{Decoder, Limits};
///
/// let mut dec = Decoder::new(Limits::default());
/// for byte in b"\x05!done\x08=ret=*1A\x00" {
///     dec.feed(&[*byte]); // one byte at a time works too
/// }
/// let sentence = dec.poll_sentence().unwrap().unwrap();
/// assert_eq!(sentence.words(), [b"!done".to_vec(), b"=ret=*1A".to_vec()]);
/// assert_eq!(dec.poll_sentence().unwrap(), None);
/// ```
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    /// Bytes fed but not yet decoded; `buf[pos..]` is live.
    buf: Vec<u8>,
    pos: usize,
    /// Words of the sentence being assembled.
    words: Vec<Vec<u8>>,
    /// Sum of `words` lengths.
    sentence_bytes: usize,
    poisoned: bool,
}

impl Decoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            buf: Vec::new(),
            pos: 0,
            words: Vec::new(),
            sentence_bytes: 0,
            poisoned: false,
        }
    }

    /// Adds bytes read from the transport.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.poisoned {
            return;
        }
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 4096 && self.pos * 2 > self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// Bytes fed and not yet turned into complete words.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// True when no partial word or sentence is pending: the stream is at a sentence boundary.
    pub fn is_idle(&self) -> bool {
        self.buffered() == 0 && self.words.is_empty()
    }

    /// The next complete sentence, `Ok(None)` if more bytes are needed.
    ///
    /// Empty sentences (a lone terminator) are skipped, as the router does
    /// (`docs/reference/routeros-api.md` §1).
    #[must_use = "a decoded sentence must be handled"]
    pub fn poll_sentence(&mut self) -> Result<Option<Sentence>, DecodeError> {
        if self.poisoned {
            return Err(DecodeError::Poisoned);
        }
        match self.step() {
            Ok(found) => Ok(found),
            Err(e) => {
                self.poisoned = true;
                self.buf = Vec::new();
                self.pos = 0;
                self.words = Vec::new();
                Err(e)
            }
        }
    }

    fn step(&mut self) -> Result<Option<Sentence>, DecodeError> {
        loop {
            let live = &self.buf[self.pos..];
            // The terminator is tested only on a full prefix: `81 00` is length 256, not a
            // terminator after `81` (`docs/reference/routeros-api.md` §1.1 pitfall).
            let Some((len, prefix)) = decode_len(live)? else {
                return Ok(None);
            };
            // u32 always fits usize on the 32- and 64-bit targets tikban ships for.
            if len as usize > self.limits.max_word {
                return Err(DecodeError::WordTooLong {
                    len: u64::from(len),
                    max: self.limits.max_word,
                });
            }
            let len = len as usize;
            if len == 0 {
                self.pos += prefix;
                if self.words.is_empty() {
                    continue;
                }
                self.sentence_bytes = 0;
                return Ok(Some(Sentence::new(std::mem::take(&mut self.words))));
            }
            if self.sentence_bytes + len > self.limits.max_sentence {
                return Err(DecodeError::SentenceTooLong {
                    max: self.limits.max_sentence,
                });
            }
            if self.words.len() >= self.limits.max_words {
                return Err(DecodeError::TooManyWords {
                    max: self.limits.max_words,
                });
            }
            let Some(word) = live.get(prefix..prefix + len) else {
                return Ok(None);
            };
            self.words.push(word.to_vec());
            self.sentence_bytes += len;
            self.pos += prefix + len;
        }
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(dec: &mut Decoder) -> Vec<Sentence> {
        let mut out = Vec::new();
        while let Some(s) = dec.poll_sentence().unwrap() {
            out.push(s);
        }
        out
    }

    #[test]
    fn decodes_byte_by_byte() {
        let bytes = b"\x03!re\x0c=address=1.2\x00\x05!done\x00";
        let mut dec = Decoder::default();
        let mut got = Vec::new();
        for b in bytes {
            dec.feed(&[*b]);
            got.extend(decode_all(&mut dec));
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].words()[1], b"=address=1.2");
        assert_eq!(got[1].first(), Some(&b"!done"[..]));
        assert!(dec.is_idle());
    }

    #[test]
    fn length_256_is_not_a_terminator() {
        // 256 encodes as `81 00`: a reader that checks for 0x00 after the first prefix byte
        // would end the sentence early (librouteros `test_long_word`).
        let mut bytes = vec![0x81, 0x00];
        bytes.extend(std::iter::repeat_n(b'a', 256));
        bytes.push(0);
        let mut dec = Decoder::default();
        dec.feed(&bytes[..1]);
        assert_eq!(dec.poll_sentence(), Ok(None));
        dec.feed(&bytes[1..]);
        let s = dec.poll_sentence().unwrap().unwrap();
        assert_eq!(s.words()[0].len(), 256);
    }

    #[test]
    fn skips_empty_sentences() {
        let mut dec = Decoder::default();
        dec.feed(b"\x00\x00\x05!done\x00");
        assert_eq!(decode_all(&mut dec).len(), 1);
    }

    #[test]
    fn rejects_word_over_limit_before_buffering_it() {
        let mut dec = Decoder::new(Limits {
            max_word: 10,
            ..Limits::default()
        });
        // Declares a 2^32-1 byte word; only the prefix is fed.
        dec.feed(&[0xF0, 0xFF, 0xFF, 0xFF, 0xFF]);
        assert_eq!(
            dec.poll_sentence(),
            Err(DecodeError::WordTooLong {
                len: 0xFFFF_FFFF,
                max: 10
            })
        );
        assert_eq!(dec.poll_sentence(), Err(DecodeError::Poisoned));
        // Found by the `hostile_bytes_never_panic` property: state after poisoning must stay
        // consistent (this subtracted with overflow).
        assert_eq!(dec.buffered(), 0);
        dec.feed(b"\x05!done\x00");
        assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn rejects_sentence_over_limit() {
        let mut dec = Decoder::new(Limits {
            max_word: 10,
            max_sentence: 12,
            max_words: 100,
        });
        dec.feed(b"\x05aaaaa\x05bbbbb\x05ccccc\x00");
        assert_eq!(
            dec.poll_sentence(),
            Err(DecodeError::SentenceTooLong { max: 12 })
        );
    }

    #[test]
    fn rejects_too_many_words() {
        let mut dec = Decoder::new(Limits {
            max_words: 2,
            ..Limits::default()
        });
        dec.feed(b"\x01a\x01b\x01c\x00");
        assert_eq!(
            dec.poll_sentence(),
            Err(DecodeError::TooManyWords { max: 2 })
        );
    }

    #[test]
    fn rejects_control_byte() {
        let mut dec = Decoder::default();
        dec.feed(b"\x05!done\xf8");
        assert_eq!(
            dec.poll_sentence(),
            Err(DecodeError::Length(LengthError::ControlByte(0xF8)))
        );
    }

    #[test]
    fn limits_reset_per_sentence() {
        let mut dec = Decoder::new(Limits {
            max_word: 10,
            max_sentence: 6,
            max_words: 2,
        });
        for _ in 0..100 {
            dec.feed(b"\x03abc\x03def\x00");
        }
        assert_eq!(decode_all(&mut dec).len(), 100);
    }

    #[test]
    fn buffer_is_reclaimed_after_consumption() {
        let mut dec = Decoder::default();
        let chunk = b"\x05!done\x00".repeat(2000);
        for _ in 0..50 {
            dec.feed(&chunk);
            assert_eq!(decode_all(&mut dec).len(), 2000);
        }
        assert_eq!(dec.buffered(), 0);
        assert!(
            dec.buf.capacity() < 4 * chunk.len(),
            "{}",
            dec.buf.capacity()
        );
    }
}
