"""Hostile .mdl files for the reader's own validation: mutations of a good file's header JSON,
model tables, steps, chunk index and chunk payloads, re-sealed with correct checksums so that
only the reader's checks stand between them and the decoder; and a runner that decodes many
such files in a child process, telling a clean ``MdlsaeError`` from any other exception, a
crash or a hang. Used by tests/test_hostile.py (a few hundred files) and bench/reseal_fuzz.py
(thousands).
"""

from __future__ import annotations

import json
import os
import selectors
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np

_PRE = struct.Struct("<8sHHIQ")
_ENTRY = struct.Struct("<QIII")
HOSTILE_VALUES = [None, True, -1, 0, 1, 3, 2**31, 2**40, 2**63, 1.5, float("nan"), "x", "", [], {}, [1, 2]]


def reseal(data: bytes) -> bytes:
    """``data`` with every checksum the reader would check recomputed over what is there now:
    the header's, each chunk's (for index entries that point inside the file) and the index's."""
    out = bytearray(data)
    if len(out) < _PRE.size:
        return bytes(out)
    magic, version, flags, _, hlen = _PRE.unpack_from(out)
    hend = _PRE.size + hlen
    if hend > len(out):
        return bytes(out)
    _PRE.pack_into(out, 0, magic, version, flags, zlib.crc32(out[_PRE.size:hend]), hlen)
    if hend + 8 > len(out):
        return bytes(out)
    (n,) = struct.unpack_from("<Q", out, hend)
    end = hend + 8 + n * _ENTRY.size
    if end + 4 > len(out):
        return bytes(out)
    for i in range(n):
        at = hend + 8 + i * _ENTRY.size
        off, nb, rows, _ = _ENTRY.unpack_from(out, at)
        if off + nb <= len(out):
            _ENTRY.pack_into(out, at, off, nb, rows, zlib.crc32(out[off:off + nb]))
    struct.pack_into("<I", out, end, zlib.crc32(out[hend:end]))
    return bytes(out)


class Layout:
    """The sections of a good file, to aim mutations at."""

    def __init__(self, data: bytes):
        self.data = data
        _, _, _, _, hlen = _PRE.unpack_from(data)
        self.hstart, self.hend = _PRE.size, _PRE.size + hlen
        (js_len,) = struct.unpack_from("<I", data, self.hstart)
        self.js = (self.hstart + 4, self.hstart + 4 + js_len)
        self.meta = json.loads(data[self.js[0]:self.js[1]])
        self.model = (self.js[1], self.js[1] + self.meta["model_bytes"])
        self.steps = (self.model[1], self.hend)
        (n,) = struct.unpack_from("<Q", data, self.hend)
        self.index = (self.hend, self.hend + 8 + n * _ENTRY.size + 4)
        self.chunks = (self.index[1], len(data))

    def with_meta(self, meta: dict) -> bytes:
        """The file with its header JSON replaced (header length and chunk offsets follow)."""
        js = json.dumps(meta).encode()
        shift = len(js) - (self.js[1] - self.js[0])
        d = self.data
        header = struct.pack("<I", len(js)) + js + d[self.js[1]:self.hend]
        index = bytearray(d[self.index[0]:self.index[1]])
        n = (len(index) - 12) // _ENTRY.size
        for i in range(n):
            off, nb, rows, crc = _ENTRY.unpack_from(index, 8 + i * _ENTRY.size)
            _ENTRY.pack_into(index, 8 + i * _ENTRY.size, off + shift, nb, rows, crc)
        magic, version, flags, crc, _ = _PRE.unpack_from(d)
        return _PRE.pack(magic, version, flags, crc, len(header)) + header + bytes(index) + d[self.chunks[0]:]


def mutate(layout: Layout, rng: np.random.Generator) -> tuple[str, bytes]:
    """One hostile variant of the file and what was done to it."""
    d = bytearray(layout.data)
    kind = int(rng.integers(0, 8))
    if kind <= 1:  # a header field removed, or given a hostile value
        meta = dict(layout.meta)
        key = sorted(meta)[int(rng.integers(0, len(meta)))]
        if kind == 0:
            del meta[key]
            return f"meta: del {key}", reseal(layout.with_meta(meta))
        meta[key] = HOSTILE_VALUES[int(rng.integers(0, len(HOSTILE_VALUES)))]
        return f"meta: {key}={meta[key]!r}", reseal(layout.with_meta(meta))
    if kind == 2:  # a numeric header field scaled or offset (sizes that do not add up)
        meta = dict(layout.meta)
        key = str(rng.choice(["d_sae", "n_rows", "chunk_rows", "model_bytes", "d_in", "features_per_stream"]))
        meta[key] = int(max(0, meta[key] * int(rng.choice([2, 3, 1000])) + int(rng.integers(-2, 3))))
        return f"meta: {key}={meta[key]}", reseal(layout.with_meta(meta))
    regions = {3: ("json", layout.js), 4: ("model", layout.model), 5: ("index", layout.index),
               6: ("chunks", layout.chunks), 7: ("steps", layout.steps)}
    name, (lo, hi) = regions[kind]
    if hi <= lo:
        name, (lo, hi) = "model", layout.model
    for _ in range(int(rng.integers(1, 5))):
        at = int(rng.integers(lo, hi))
        d[at] = int(rng.integers(0, 256)) if rng.random() < 0.5 else d[at] ^ (1 << int(rng.integers(0, 8)))
    return f"{name}: bytes changed", reseal(bytes(d))


_CHILD = r"""
import sys
from mdlsae import MdlsaeError
from mdlsae.codec import decode, inspect
print("ready", flush=True)
for line in sys.stdin:
    i, path = line.rstrip("\n").split("\t")
    print("start", i, flush=True)
    try:
        inspect(path)
        decode(path)
        print("ok", i, flush=True)
    except MdlsaeError:
        print("error", i, flush=True)
    except BaseException as e:
        print("other", i, type(e).__name__, str(e)[:200].replace("\n", " "), flush=True)
"""


class _Lines:
    """Lines from a pipe, each waited for at most a given time (select on the raw descriptor:
    a buffered reader would hide lines already read from it)."""

    def __init__(self, fd: int):
        self.fd, self.buf = fd, b""
        self.sel = selectors.DefaultSelector()
        self.sel.register(fd, selectors.EVENT_READ)

    def next(self, wait: float) -> str | None:
        """The next line; "" at the end of the pipe, None after ``wait`` seconds without one."""
        while b"\n" not in self.buf:
            if not self.sel.select(wait):
                return None
            more = os.read(self.fd, 1 << 16)
            if not more:
                return ""
            self.buf += more
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def close(self) -> None:
        self.sel.close()


def decode_all(paths: list[Path], timeout: float = 10.0) -> list[str]:
    """Decode each file in a child process (one child for many files, a new one after a crash or
    a hang): per file "ok", "error" (an MdlsaeError), "other <type> <message>", "crash" (the child
    died decoding it) or "hang" (no answer within ``timeout`` seconds)."""
    results: list[str | None] = [None] * len(paths)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    nxt = 0
    while nxt < len(paths):
        child = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, env=env)
        child.stdin.write("".join(f"{i}\t{paths[i]}\n" for i in range(nxt, len(paths))).encode())
        child.stdin.close()
        lines = _Lines(child.stdout.fileno())
        current, wait = None, 120.0  # the first answer waits for the child's imports
        while True:
            line = lines.next(wait)
            wait = timeout
            if not line:  # a hang (None), or the child exited ("")
                child.kill()
                child.wait()
                if current is None and line is None:
                    raise RuntimeError("the decoding child stopped answering between files")
                if current is not None:
                    results[current] = "hang" if line is None else "crash"
                break
            word, *rest = line.rstrip("\n").split(" ", 2)
            if word == "start":
                current = int(rest[0])
            elif word != "ready":
                results[int(rest[0])] = " ".join([word, *rest[1:]])
                current = None
        lines.close()
        child.stdout.close()
        done = [r is not None for r in results]
        if all(done):
            break
        if done.index(False) <= nxt and results[nxt] is None:
            raise RuntimeError(f"the decoding child exited before answering for {paths[nxt]}")
        nxt = done.index(False)
    return results
