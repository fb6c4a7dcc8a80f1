//! Property tests: encoding and decoding agree for arbitrary words, sentences and chunkings.

use proptest::prelude::*;
use routeros_proto::length::{decode_len, encode_len};
use routeros_proto::{Decoder, Limits, Reply, Sentence};

fn limits() -> Limits {
    Limits {
        max_word: 1 << 20,
        max_sentence: 1 << 22,
        max_words: 1 << 12,
    }
}

/// Words of arbitrary bytes, including 0x00 and lengths that cross the 1/2/3-byte prefix
/// boundaries (127/128, 16383/16384).
fn word() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 1..40),
        1 => proptest::collection::vec(any::<u8>(), 120..140),
        1 => (16380usize..16390).prop_map(|n| vec![0xA5; n]),
    ]
}

fn sentence() -> impl Strategy<Value = Sentence> {
    proptest::collection::vec(word(), 1..8).prop_map(Sentence::new)
}

fn decode_chunks(bytes: &[u8], cuts: &[usize]) -> Vec<Sentence> {
    let mut dec = Decoder::new(limits());
    let mut out = Vec::new();
    let mut start = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    points.push(bytes.len());
    for end in points {
        dec.feed(&bytes[start..end.max(start)]);
        start = end.max(start);
        while let Some(s) = dec.poll_sentence().unwrap() {
            out.push(s);
        }
    }
    assert!(dec.is_idle());
    out
}

proptest! {
    #[test]
    fn length_round_trips(len in any::<u32>()) {
        let mut buf = Vec::new();
        encode_len(len, &mut buf);
        prop_assert_eq!(decode_len(&buf), Ok(Some((len, buf.len()))));
        // Every strict prefix of the encoding asks for more bytes.
        for cut in 0..buf.len() {
            prop_assert_eq!(decode_len(&buf[..cut]), Ok(None));
        }
    }

    #[test]
    fn sentences_round_trip(sentences in proptest::collection::vec(sentence(), 1..6)) {
        let mut bytes = Vec::new();
        for s in &sentences {
            s.encode(&mut bytes);
        }
        prop_assert_eq!(decode_chunks(&bytes, &[]), sentences);
    }

    #[test]
    fn any_chunking_gives_the_same_sentences(
        sentences in proptest::collection::vec(sentence(), 1..6),
        cuts in proptest::collection::vec(any::<usize>(), 0..30),
    ) {
        let mut bytes = Vec::new();
        for s in &sentences {
            s.encode(&mut bytes);
        }
        prop_assert_eq!(decode_chunks(&bytes, &cuts), sentences);
    }

    #[test]
    fn one_byte_at_a_time_gives_the_same_sentences(s in sentence()) {
        let bytes = s.to_bytes();
        let cuts: Vec<usize> = (0..bytes.len()).collect();
        prop_assert_eq!(decode_chunks(&bytes, &cuts), vec![s]);
    }

    #[test]
    fn hostile_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut dec = Decoder::new(Limits { max_word: 64, max_sentence: 256, max_words: 8 });
        dec.feed(&bytes);
        while let Ok(Some(s)) = dec.poll_sentence() {
            let _ = Reply::parse(&s);
        }
        prop_assert!(dec.buffered() <= bytes.len());
    }

    #[test]
    fn reply_attributes_round_trip(
        key in "[a-z][a-z0-9.-]{0,10}",
        value in proptest::collection::vec(any::<u8>(), 0..30),
        tag in proptest::option::of("[0-9a-z]{1,6}"),
    ) {
        let mut words = vec![b"!re".to_vec(), [b"=", key.as_bytes(), b"=", &value].concat()];
        if let Some(t) = &tag {
            words.push(format!(".tag={t}").into_bytes());
        }
        let reply = Reply::parse(&Sentence::new(words.clone())).unwrap();
        prop_assert_eq!(reply.attributes.get(&key), Some(&value[..]));
        prop_assert_eq!(reply.tag_str(), tag.as_deref());
        prop_assert_eq!(reply.to_sentence(), Sentence::new(words));
    }
}
