"""Cross-check helper: the independent Python `librouteros` encodes and decodes API sentences.

Usage (stdin/stdout carry JSON; words travel as hex so any byte survives):
  python3 librouteros_xcheck.py encode  < [[hexword, ...], ...]   -> {"bytes": hex}
  python3 librouteros_xcheck.py decode  < {"bytes": hex}          -> [[hexword, ...], ...]

Words are handed to librouteros as latin-1 text, which maps every byte 0..255 to one code point,
so librouteros' own length arithmetic and framing are what is exercised, byte for byte.
"""

import json
import sys

from librouteros.protocol import ApiProtocol, encode_sentence

ENCODING = "latin-1"


class BufferTransport:
    """A transport over a byte buffer, with librouteros' read contract (exact lengths)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def read(self, length: int) -> bytes:
        if self.pos + length > len(self.data):
            raise EOFError("librouteros asked for more bytes than were sent")
        chunk = self.data[self.pos : self.pos + length]
        self.pos += length
        return chunk

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


def encode(sentences):
    out = b"".join(
        encode_sentence(*(bytes.fromhex(w).decode(ENCODING) for w in words), encoding=ENCODING)
        for words in sentences
    )
    return {"bytes": out.hex()}


def decode(doc):
    transport = BufferTransport(bytes.fromhex(doc["bytes"]))
    proto = ApiProtocol(transport, ENCODING)
    sentences = []
    while transport.pos < len(transport.data):
        reply_word, words = proto.readSentence()
        sentences.append([w.encode(ENCODING).hex() for w in (reply_word, *words)])
    return sentences


def main() -> None:
    mode = sys.argv[1]
    doc = json.load(sys.stdin)
    result = encode(doc) if mode == "encode" else decode(doc)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
