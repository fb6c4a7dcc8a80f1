//! Sentences: words ended by a zero-length word (`docs/reference/routeros-api.md` §1).

use std::fmt;

use crate::length::encode_len;

/// Attribute names whose values are secrets. [`Sentence`]'s and [`crate::Command`]'s `Debug`
/// output replaces their values with `<redacted>`.
const SECRET_ATTRIBUTES: &[&[u8]] = &[b"=password=", b"=response="];

/// One API sentence: a non-empty list of words, each an opaque byte string.
///
/// RouterOS declares no charset (`docs/reference/routeros-api.md` §7), so words stay bytes. Use
/// [`lossy`] to show one to a person.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Sentence {
    words: Vec<Vec<u8>>,
}

impl Sentence {
    /// A sentence made of `words`.
    pub fn new(words: Vec<Vec<u8>>) -> Self {
        Self { words }
    }

    /// The words, in order.
    pub fn words(&self) -> &[Vec<u8>] {
        &self.words
    }

    /// Takes the words out.
    pub fn into_words(self) -> Vec<Vec<u8>> {
        self.words
    }

    /// The first word (the command or reply word), if any.
    pub fn first(&self) -> Option<&[u8]> {
        self.words.first().map(Vec::as_slice)
    }

    /// Appends one word.
    pub fn push(&mut self, word: impl Into<Vec<u8>>) {
        self.words.push(word.into());
    }

    /// Number of words.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// True when the sentence has no words. Such a sentence is never sent: the router ignores
    /// empty sentences (`docs/reference/routeros-api.md` §1), and [`Sentence::encode`] would emit only the
    /// terminator.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Bytes this sentence takes on the wire.
    pub fn encoded_len(&self) -> usize {
        self.words
            .iter()
            .map(|w| crate::length::encoded_len_size(word_len(w)) + w.len())
            .sum::<usize>()
            + 1
    }

    /// Appends the wire form (each word length-prefixed, then `0x00`) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_words(self.words.iter().map(Vec::as_slice), out);
    }

    /// The wire form as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out
    }
}

/// Appends the wire form of a sentence made of `words` to `out`.
///
/// # Panics
/// If a word is longer than `u32::MAX` bytes, which no length prefix can carry.
pub fn encode_words<'a>(words: impl IntoIterator<Item = &'a [u8]>, out: &mut Vec<u8>) {
    for word in words {
        encode_len(word_len(word), out);
        out.extend_from_slice(word);
    }
    out.push(0);
}

fn word_len(word: &[u8]) -> u32 {
    // A 4 GiB word cannot be built from network input: the decoder's limits stop far below, and
    // the command builder takes values from the program itself.
    u32::try_from(word.len()).expect("RouterOS words are at most u32::MAX bytes")
}

/// Decodes bytes for display: valid UTF-8 as is, anything else replaced by U+FFFD.
pub fn lossy(word: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(word)
}

/// Writes words for `Debug`, hiding the values of secret attributes.
pub(crate) fn debug_words<'a>(
    f: &mut fmt::Formatter<'_>,
    words: impl IntoIterator<Item = &'a [u8]>,
) -> fmt::Result {
    let mut list = f.debug_list();
    for word in words {
        list.entry(&DebugWord(word));
    }
    list.finish()
}

struct DebugWord<'a>(&'a [u8]);

impl fmt::Debug for DebugWord<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for secret in SECRET_ATTRIBUTES {
            if self.0.starts_with(secret) {
                return write!(f, "\"{}<redacted>\"", lossy(secret));
            }
        }
        write!(f, "{:?}", lossy(self.0))
    }
}

impl fmt::Debug for Sentence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sentence")?;
        debug_words(f, self.words.iter().map(Vec::as_slice))
    }
}

impl From<Vec<Vec<u8>>> for Sentence {
    fn from(words: Vec<Vec<u8>>) -> Self {
        Self::new(words)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(words: &[&str]) -> Sentence {
        Sentence::new(words.iter().map(|w| w.as_bytes().to_vec()).collect())
    }

    /// `docs/reference/routeros-api.md` §1.2, whole sentences.
    #[test]
    fn encodes_reference_login_sentence() {
        let got = s(&["/login", "=name=admin", "=password="]).to_bytes();
        let want = b"\x06/login\x0b=name=admin\x0a=password=\x00";
        assert_eq!(got, want);
    }

    #[test]
    fn encodes_reference_done_sentence() {
        let got = s(&["!done", "=ret=*1A", ".tag=7"]).to_bytes();
        assert_eq!(got, b"\x05!done\x08=ret=*1A\x06.tag=7\x00");
    }

    #[test]
    fn word_length_counts_bytes_not_chars() {
        // librouteros `test_utf_8_word_encoding`: `ł` is two bytes.
        assert_eq!(s(&["ł"]).to_bytes(), b"\x02\xc5\x82\x00");
    }

    #[test]
    fn encoded_len_matches_bytes() {
        let mut big = s(&["!re"]);
        big.push(vec![b'x'; 300]);
        assert_eq!(big.encoded_len(), big.to_bytes().len());
    }

    #[test]
    fn debug_redacts_password_and_response() {
        let dbg = format!("{:?}", s(&["/login", "=name=admin", "=password=hunter2"]));
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("=name=admin"), "{dbg}");
        assert!(dbg.contains("<redacted>"), "{dbg}");
        let dbg = format!("{:?}", s(&["/login", "=response=00abcdef"]));
        assert!(!dbg.contains("abcdef"), "{dbg}");
    }
}
