#!/usr/bin/python3
"""A tiny corpus and model for the end-to-end tests: DIR/data/{train_000,val_000}.bin (a period-15
pattern over 64 token ids, in loqt's shard format) and DIR/tiny.json (2 layers, hidden 32).

    python3 tests/tiny_fixture.py DIR
"""
import os
import struct
import sys

PATTERN = [1, 5, 9, 13, 17, 21, 25, 29, 33, 37, 41, 45, 2, 7, 11]


def shard(path, n, shift, vocab=64):
    toks = [PATTERN[(i + shift) % len(PATTERN)] for i in range(n)]
    with open(path, "wb") as f:  # magic, version, vocabulary, count, 40 bytes of padding, uint16 ids
        f.write(b"LOQTSHRD" + struct.pack("<IIQ", 1, vocab, n) + bytes(40) + struct.pack("<%dH" % n, *toks))


def main(root):
    os.makedirs(root + "/data", exist_ok=True)
    shard(root + "/data/train_000.bin", 4000, 0)
    shard(root + "/data/val_000.bin", 1000, 3)
    with open(root + "/tiny.json", "w") as f:
        f.write('{"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, '
                '"num_attention_heads": 4, "vocab_size": 64, "max_position_embeddings": 64}\n')


if __name__ == "__main__":
    main(sys.argv[1])
