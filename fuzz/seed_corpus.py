#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz corpora: well-formed Doozer frames for
every verb (with edge-case fields), broken frames, and glob/path pairs.
cargo fuzz grows the corpora from these; run from the fuzz/ directory."""
import os, struct

def varint(n):
    n &= (1 << 64) - 1
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])

def field(num, wire, payload):
    return varint((num << 3) | wire) + payload

def request(tag=None, verb=None, path=None, value=None, offset=None, rev=None):
    m = b""
    if tag is not None: m += field(1, 0, varint(tag))
    if verb is not None: m += field(2, 0, varint(verb))
    if path is not None: p = path.encode(); m += field(4, 2, varint(len(p)) + p)
    if value is not None: m += field(5, 2, varint(len(value)) + value)
    if offset is not None: m += field(7, 0, varint(offset))
    if rev is not None: m += field(9, 0, varint(rev))
    return struct.pack(">I", len(m)) + m

GET, SET, DEL, REV, WAIT, NOP, WALK, GETDIR, STAT, SELF, ACCESS = 1, 2, 3, 5, 6, 7, 9, 14, 16, 20, 99
streams = {
    "set-get": request(1, SET, "/a", b"x", rev=0) + request(2, GET, "/a"),
    "set-clobber-del": request(1, SET, "/a/b", b"1", rev=-1) + request(2, DEL, "/a/b", rev=-1),
    "cas": request(1, SET, "/k", b"1", rev=0) + request(2, SET, "/k", b"2", rev=1) + request(3, SET, "/k", b"3", rev=0),
    "dirs": request(1, SET, "/d/e/f", b"", rev=0) + request(2, GETDIR, "/d", offset=0) + request(3, STAT, "/d"),
    "walk-wait": request(1, SET, "/w/x", b"v", rev=-1) + request(2, WALK, "/w/**", offset=0) + request(3, WAIT, "/**", rev=1),
    "nop-rev-self": request(1, NOP) + request(2, REV) + request(3, SELF),
    "access": request(1, ACCESS, value=b"secret"),
    "bad-path": request(1, SET, "/a b", b"", rev=0) + request(2, DEL, "", rev=0),
    "below-file": request(1, SET, "/f", b"", rev=0) + request(2, SET, "/f/g", b"", rev=0) + request(3, DEL, "/f/g", rev=-1),
    "negative-offset": request(1, GETDIR, "/", offset=-1) + request(2, WALK, "/*", offset=2**31 - 1),
    "old-rev": request(1, GET, "/a", rev=-5) + request(2, STAT, "/a", rev=2**62),
    "unknown-verb": request(1, 4242) + request(2, 0) + request(3),
    "empty-frame": b"\x00\x00\x00\x00",
    "negative-length": b"\xff\xff\xff\xff",
    "huge-length": b"\x7f\xff\xff\xff" + b"x" * 16,
    "truncated": request(1, SET, "/a", b"xyz", rev=0)[:-2],
    "garbage": b"\x00\x00\x00\x05\xff\xff\xff\xff\xff",
    "wrong-wire-type": b"\x00\x00\x00\x03\x4a\x01\x00",
    "bad-utf8-path": b"\x00\x00\x00\x04\x22\x02\xff\xfe",
    "glob-stars": request(1, WAIT, "/***/a*?b/**", rev=1) + request(2, WALK, "/?/*", offset=0),
    "many": b"".join(request(i, SET, "/m/%d" % (i % 7), b"v" * i, rev=-1) for i in range(40)),
}
globs = {
    "star": "/a*\n/abc", "double": "/a/**\n/a/b/c", "qmark": "/?\n/x", "root": "/\n/",
    "literal": "/x/y\n/x/y", "triple": "/***\n/a/b", "bad": "/a[\n/a", "trailing": "/a/\n/a",
    "empty": "\n", "mixed": "/a*b*c\n/aXbY/c", "long": "/" + "*a" * 200 + "\n/" + "a" * 300,
    "image-magic": "DZIMAGE1",
}
for name, data in streams.items():
    for target in ("frame", "store"):
        with open(os.path.join("corpus", target, "seed-" + name), "wb") as f:
            f.write(data)
for name, text in globs.items():
    with open(os.path.join("corpus", "glob", "seed-" + name), "wb") as f:
        f.write(text.encode())
