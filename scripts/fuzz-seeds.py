#!/usr/bin/env python3
"""Writes the committed seed corpus of the fuzz targets (fuzz/corpus/*/seed-*).

Each seed is a small, valid or deliberately malformed conversation a web
server could start. The connection target's input starts with two control
bytes (flags, piece-size seed): see fuzz/src/lib.rs.
"""
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fuzz", "corpus")

BEGIN, ABORT, END, PARAMS, STDIN, STDOUT, STDERR, DATA, GET_VALUES = 1, 2, 3, 4, 5, 6, 7, 8, 9


def record(kind, rid, content=b"", padding=None, version=1):
    if padding is None:
        padding = (8 - len(content) % 8) % 8
    return struct.pack(">BBHHBB", version, kind, rid, len(content), padding, 0) + content + b"\0" * padding


def length(n):
    return bytes([n]) if n < 128 else struct.pack(">I", n | 0x80000000)


def pair(name, value):
    return length(len(name)) + length(len(value)) + name + value


def pairs(items):
    return b"".join(pair(n.encode(), v.encode()) for n, v in items)


def begin(rid, role=1, keep=True):
    return record(BEGIN, rid, struct.pack(">HB5x", role, 1 if keep else 0))


NGINX = [
    ("QUERY_STRING", "page=2&sort=desc"), ("REQUEST_METHOD", "POST"),
    ("CONTENT_TYPE", "application/x-www-form-urlencoded"), ("CONTENT_LENGTH", "11"),
    ("SCRIPT_NAME", "/index.php"), ("REQUEST_URI", "/index.php?page=2&sort=desc"),
    ("DOCUMENT_ROOT", "/var/www/html"), ("SERVER_PROTOCOL", "HTTP/1.1"),
    ("GATEWAY_INTERFACE", "CGI/1.1"), ("SERVER_SOFTWARE", "nginx/1.22.1"),
    ("REMOTE_ADDR", "127.0.0.1"), ("REMOTE_PORT", "51324"), ("SERVER_PORT", "8080"),
    ("HTTP_HOST", "localhost:8080"), ("HTTP_COOKIE", "session=" + "c" * 200),
]


def request(rid, params=NGINX, body=b"a=1&b=2&c=3", keep=True, role=1):
    p = pairs(params)
    return (begin(rid, role, keep) + record(PARAMS, rid, p[:100]) + record(PARAMS, rid, p[100:])
            + record(PARAMS, rid) + record(STDIN, rid, body) + record(STDIN, rid))


def main():
    seeds = {
        "record": {
            "begin": begin(1),
            "stdin": record(STDIN, 1, b"hello world"),
            "padded": record(PARAMS, 1, b"\x01\x01AB", padding=255),
            "end": record(END, 1, struct.pack(">IB3x", 938, 0)),
            "partial": record(STDIN, 1, b"x" * 40)[:20],
            "max-length": record(STDIN, 1, b"y" * 65535)[:32],
        },
        "name_value": {
            "nginx": b"\x07" + pairs(NGINX),
            "long-lengths": b"\x01" + pair(b"N" * 200, b"V" * 300) + pair(b"A", b""),
            "split-length": b"\x02" + struct.pack(">I", 0x80000003) + b"\x02abcde",
            "empty-name": b"\x05" + pair(b"", b"v"),
            "huge-length": b"\x03\x01\xff\xff\xff\xffA",
        },
        "connection": {
            "nginx-keep-conn": b"\x00\x07" + request(1) + request(1),
            "close": b"\x00\x11" + request(1, keep=False),
            "get-values": b"\x00\x03" + record(GET_VALUES, 0, pairs(
                [("FCGI_MAX_CONNS", ""), ("FCGI_MAX_REQS", ""), ("FCGI_MPXS_CONNS", ""), ("X", "")])),
            "multiplexed": b"\x01\x05" + begin(1) + record(PARAMS, 1, pairs(NGINX[:3])) + begin(2)
            + record(PARAMS, 2, pairs(NGINX[3:6])) + record(PARAMS, 1) + record(PARAMS, 2)
            + record(STDIN, 2, b"two") + record(STDIN, 1, b"one") + record(STDIN, 2) + record(STDIN, 1),
            "abort": b"\x02\x09" + begin(1) + record(PARAMS, 1) + record(ABORT, 1) + record(ABORT, 1)
            + record(STDIN, 1),
            "filter": b"\x00\x0b" + request(3, role=3) + record(DATA, 3, b"file") + record(DATA, 3),
            "unknown-role": b"\x00\x0d" + begin(4, role=9) + record(PARAMS, 4, pairs(NGINX[:2])) + request(5),
            "cant-mpx": b"\x00\x0f" + begin(1) + begin(2) + record(PARAMS, 1) + record(STDIN, 1),
            "unknown-types": b"\x00\x13" + record(42, 0, b"x") + record(BEGIN, 0, b"\0" * 8)
            + record(STDOUT, 1, b"wrong way") + record(99, 7, b"future"),
            "bad-version": b"\x00\x01" + record(BEGIN, 1, b"\0\x01" + b"\0" * 6, version=2),
            "stdin-early": b"\x00\x17" + begin(1) + record(STDIN, 1, b"early"),
            "end-early": b"\x04\x19" + request(1) + request(2),
        },
    }
    # The request target takes the byte stream alone (no control bytes): the
    # connection seeds without their first two bytes, and a few more.
    seeds["request"] = {name: data[2:] for name, data in seeds["connection"].items()}
    seeds["request"].update({
        "big-body": request(1, body=b"z" * 20000, keep=False),
        "authorizer": begin(2, role=2) + record(PARAMS, 2, pairs(NGINX[:4])) + record(PARAMS, 2),
        "too-many-params": begin(1) + record(PARAMS, 1, pairs([("P%d" % i, "") for i in range(300)])[:65535])
        + record(PARAMS, 1) + record(STDIN, 1),
        "cut-mid-body": begin(1) + record(PARAMS, 1) + record(STDIN, 1, b"part of a body"),
    })
    for target, files in seeds.items():
        folder = os.path.join(ROOT, target)
        os.makedirs(folder, exist_ok=True)
        for name, data in files.items():
            with open(os.path.join(folder, "seed-" + name), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
