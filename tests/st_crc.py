"""For tests that edit a safetensors file loqt wrote: recompute the CRC-32C that loqt records in
__metadata__ ("crc32c", 8 hex digits, of the data buffer), so the edit itself is what the reader
sees.  Written from the definition (Castagnoli polynomial, reflected), not from loqt's C code."""
import json
import struct

_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _TABLE.append(_c)


def crc32c(data):
    crc = 0xFFFFFFFF
    for x in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ x) & 0xFF]
    return crc ^ 0xFFFFFFFF


def fix_crc(b):
    """b: bytearray of a whole file; patches its recorded crc32c in place (same length)."""
    n = struct.unpack("<Q", bytes(b[:8]))[0]
    hdr = json.loads(bytes(b[8:8 + n]))
    old = hdr["__metadata__"]["crc32c"].encode()
    j = bytes(b[:8 + n]).index(b'"' + old + b'"') + 1
    b[j:j + 8] = ("%08x" % crc32c(bytes(b[8 + n:]))).encode()
