#!/usr/bin/env python3
"""Converts llama-tokenizer.js (npm llama-tokenizer-js 1.2.2) into loqt's compact tokenizer file.

    convert_tokenizer.py PACKAGE/llama-tokenizer.js OUT.tok   write OUT.tok
    convert_tokenizer.py --check FILE.tok                     exit 0 if FILE.tok is a valid file

The package embeds two base64 strings: `llama_vocab_base64` (UTF-8 pieces separated by newlines,
line number = token id) and `llama_merges_binary` (uint16 little-endian id pairs, merges in
priority order).  The file layout is described in docs/tokenizer.md; src/data/tokenizer.c reads
it.  Standard library only.
"""
import base64
import binascii
import re
import struct
import sys

MAGIC = b"LOQTTOKN"
VERSION = 1
HEADER = 32
EXPECT_PIECES = 32000
EXPECT_MERGES = 61249


def fail(msg):
    sys.stderr.write("convert_tokenizer: error: %s\n" % msg)
    sys.exit(1)


def extract(src, name):
    m = re.search(r"\b%s\s*=\s*\"([A-Za-z0-9+/=]*)\"" % name, src)
    if not m:
        fail("%s not found in the package source" % name)
    try:
        return base64.b64decode(m.group(1), validate=True)
    except binascii.Error as e:
        fail("%s is not valid base64: %s" % (name, e))


def build(js_path):
    try:
        with open(js_path, encoding="utf-8") as f:
            src = f.read()
    except OSError as e:
        fail("cannot read %s: %s" % (js_path, e))
    try:
        pieces = extract(src, "llama_vocab_base64").decode("utf-8").split("\n")
    except UnicodeDecodeError as e:
        fail("vocabulary is not valid UTF-8: %s" % e)
    raw = extract(src, "llama_merges_binary")
    if len(raw) % 4:
        fail("merge data has %d bytes, not a multiple of 4" % len(raw))
    ids = struct.unpack("<%dH" % (len(raw) // 2), raw)
    merges = list(zip(ids[0::2], ids[1::2]))

    # The C encoder relies on these properties; the JS one silently misbehaves without them.
    if len(pieces) != EXPECT_PIECES or len(merges) != EXPECT_MERGES:
        fail("expected %d pieces and %d merges, found %d and %d" %
             (EXPECT_PIECES, EXPECT_MERGES, len(pieces), len(merges)))
    index = {}
    for i, p in enumerate(pieces):
        if not p or " " in p or p in index:
            fail("piece %d %r is empty, contains a space or is a duplicate" % (i, p))
        index[p] = i
    if pieces[1] != "<s>" or pieces[2] != "</s>" or pieces[29871] != "\u2581":
        fail("special pieces are not where llama-tokenizer-js expects them")
    for b in range(256):
        if "<0x%02X>" % b not in index:
            fail("byte piece <0x%02X> is missing" % b)
    for k, (a, b) in enumerate(merges):
        if a >= len(pieces) or b >= len(pieces) or pieces[a] + pieces[b] not in index:
            fail("merge %d (%d, %d) is out of range or its result is not a piece" % (k, a, b))

    texts = [p.encode("utf-8") for p in pieces]
    body = struct.pack("<%dH" % len(texts), *[len(t) for t in texts])
    body += b"".join(texts)
    body += struct.pack("<%dH" % (2 * len(merges)), *[x for pair in merges for x in pair])
    head = MAGIC + struct.pack("<IIIIII", VERSION, len(pieces), len(merges),
                               sum(len(t) for t in texts), binascii.crc32(body), 0)
    assert len(head) == HEADER
    return head + body, len(pieces), len(merges)


def check(path):
    """Returns None if the file is valid, else a reason."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return str(e)
    if len(data) < HEADER or data[:8] != MAGIC:
        return "not a loqt tokenizer file"
    version, n, m, text, crc, zero = struct.unpack("<IIIIII", data[8:HEADER])
    if version != VERSION:
        return "version %d, expected %d" % (version, VERSION)
    if len(data) != HEADER + 2 * n + text + 4 * m:
        return "size %d does not match its header" % len(data)
    if binascii.crc32(data[HEADER:]) != crc or zero != 0:
        return "checksum mismatch"
    return None


def main(argv):
    if len(argv) == 3 and argv[1] == "--check":
        why = check(argv[2])
        if why:
            print("%s: %s" % (argv[2], why))
            return 1
        return 0
    if len(argv) != 3:
        sys.stderr.write(__doc__)
        return 2
    data, n, m = build(argv[1])
    try:
        with open(argv[2], "wb") as f:
            f.write(data)
    except OSError as e:
        fail("cannot write %s: %s" % (argv[2], e))
    print("wrote %s: %d pieces, %d merges, %d bytes" % (argv[2], n, m, len(data)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
