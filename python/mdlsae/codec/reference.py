"""A plain Python transcription of the chunk coder's encoder (csrc/codec), written from DESIGN §3
and the format notes: integer division instead of reciprocals, one symbol list in coding order
instead of reverse walks, Python ints instead of fixed widths. Tests check that the native coder
writes exactly its bytes; benchmarks use its symbol lists to give other coders the very symbols
ours codes. Slow (about a million symbols per second): for checks, not for data."""

from __future__ import annotations

import math
from bisect import bisect_left

PROB_BITS = 28
SCALE = 1 << PROB_BITS
RANS_L = 1 << 31
MASK64 = (1 << 64) - 1


def prob_to_freq(p: float) -> int:
    return int(min(max(math.floor(p * SCALE), 1), SCALE - 1))


def gap_model(n: int, total: int, m: int):
    """(cont, bit1[j < m], empty[k < m]) frequencies of P(1) out of 2^28, or None when n == 0."""
    if n == 0:
        return None
    rho = (total - n) / total
    bits, empty, r2 = [], [], rho
    for _ in range(m):
        bits.append(prob_to_freq(r2 / (1.0 + r2)))
        empty.append(prob_to_freq(r2))
        r2 = r2 * r2
    return prob_to_freq(r2), bits, empty


def value_freqs(counts: list[int]) -> list[int]:
    n = sum(counts)
    freq = [max(c * SCALE // n, 1) for c in counts]
    order = sorted(range(len(freq)), key=lambda i: -freq[i])  # stable: ties by position
    diff = SCALE - sum(freq)
    if diff > 0:
        freq[order[0]] += diff
    j = 0
    while diff < 0:
        take = min(-diff, freq[order[j]] - 1)
        freq[order[j]] -= take
        diff += take
        j = (j + 1) % len(order)
    return freq


def bit(one: bool, f1: int) -> tuple[int, int]:
    """The (start, freq) interval of a binary decision with P(1) = f1 / 2^28."""
    s0 = SCALE - f1
    return (s0, f1) if one else (0, s0)


def gap_decisions(pos: list[int], n_seq: int, model) -> list[tuple[bool, int]]:
    """Binary decisions (bit, f1) of the active positions pos in a sequence of n_seq rows and of its end: per
    gap, "continue" per whole block of 2^m rows it skips, then either "stop" and the m bits of
    the offset, or, in the last partial block, "empty" per binary digit of the rows left until
    the one holding the gap, then the offset's lower bits. The end is a gap of all that is left."""
    if model is None:
        assert not pos
        return []
    cont, bit1, empty = model
    m = len(bit1)
    out, cur = [], 0
    for p in pos + [n_seq]:
        gap, rem = p - cur, n_seq - cur
        whole = rem >> m
        if gap >> m < whole:
            out += [(True, cont)] * (gap >> m) + [(False, cont)]
            out += [((gap >> j) & 1 == 1, bit1[j]) for j in reversed(range(m))]
        else:
            out += [(True, cont)] * whole
            base, left = whole << m, rem - (whole << m)
            for k in reversed(range(m)):
                if not (left >> k) & 1:
                    continue
                if gap >= base + (1 << k):
                    out.append((True, empty[k]))
                    base += 1 << k
                else:
                    out.append((False, empty[k]))
                    out += [(((gap - base) >> j) & 1 == 1, bit1[j]) for j in reversed(range(k))]
                    break
        cur = p + 1
    return out


def rans_stream(symbols: list[tuple[int, int]]) -> list[int]:
    """Two lanes from state 1, symbol i on lane i % 2, encoded in reverse with division."""
    x, words = [1, 1], []
    for i in reversed(range(len(symbols))):
        start, freq = symbols[i]
        lane = i % 2
        s = x[lane]
        if s >= ((RANS_L >> PROB_BITS) << 32) * freq:
            words.append(s & 0xFFFFFFFF)
            s >>= 32
        x[lane] = (s // freq) * SCALE + s % freq + start
        assert x[lane] <= MASK64
    return [x[0] & 0xFFFFFFFF, x[0] >> 32, x[1] & 0xFFFFFFFF, x[1] >> 32] + words[::-1]


def stream_symbols(codes, counts: dict, n_rows: int, features_per_stream: int = 0) -> list[list[tuple]]:
    """Per stream of one chunk (SparseCodes `codes`, rows of a file of n_rows rows coded under the
    model whose counts are `counts`: ``_C.Model.counts()``), its symbols in coding order:
    ("bit", one, f1) for a binary decision with P(1) = f1 / 2^28 and ("value", f, i, start, freq)
    for entry i of feature f's value table."""
    parent = [int(p) for p in counts["parent"]]
    d = len(parent)
    depth = []
    for f in range(d):
        k, p = 0, parent[f]
        while p >= 0:
            k, p = k + 1, parent[p]
        depth.append(k)
    order = sorted(range(d), key=lambda f: depth[f])
    active, on = counts["active"], counts["on"]
    rows: list[list[int]] = [[] for _ in range(d)]
    vals: list[list[int]] = [[] for _ in range(d)]
    for r in range(codes.n_rows):
        for e in range(codes.row_ptr[r], codes.row_ptr[r + 1]):
            rows[int(codes.index[e])].append(r)
            vals[int(codes.index[e])].append(int(codes.q[e]))
    hp, hq, hc = counts["hist_ptr"], counts["hist_q"], counts["hist_count"]
    per = d if features_per_stream <= 0 else features_per_stream
    streams = []
    for s0 in range(0, d, per):
        out: list[tuple] = []
        for f in order[s0:s0 + per]:
            p = parent[f]
            if p < 0:
                dec = gap_decisions(rows[f], codes.n_rows, gap_model(int(active[f]), n_rows, int(counts["m_main"][f])))
            else:
                prow = rows[p]
                at = [bisect_left(prow, r) for r in rows[f]]
                with_parent = [a < len(prow) and prow[a] == r for a, r in zip(at, rows[f])]
                on_pos = [a for a, w in zip(at, with_parent) if w]
                off_pos = [r - a for a, r, w in zip(at, rows[f], with_parent) if not w]
                dec = gap_decisions(on_pos, len(prow), gap_model(int(on[f]), int(active[p]), int(counts["m_main"][f])))
                dec += gap_decisions(off_pos, codes.n_rows - len(prow),
                                     gap_model(int(active[f] - on[f]), n_rows - int(active[p]), int(counts["m_off"][f])))
            out += [("bit", one, f1) for one, f1 in dec]
            qs = [int(v) for v in hq[hp[f]:hp[f + 1]]]
            if qs:
                freq = value_freqs([int(c) for c in hc[hp[f]:hp[f + 1]]])
                start = [sum(freq[:i]) for i in range(len(freq))]
                index = {q: i for i, q in enumerate(qs)}
                out += [("value", f, index[v], start[index[v]], freq[index[v]]) for v in vals[f]]
        streams.append(out)
    return streams


def encode_chunk(codes, counts: dict, n_rows: int, features_per_stream: int = 0) -> bytes:
    """The payload of one chunk, as the native encoder must write it (see stream_symbols)."""
    streams = [rans_stream([bit(s[1], s[2]) if s[0] == "bit" else (s[3], s[4]) for s in syms])
               for syms in stream_symbols(codes, counts, n_rows, features_per_stream)]
    head = [len(w) for w in streams[:-1]]
    return b"".join(int(w).to_bytes(4, "little") for w in head + [w for s in streams for w in s])
