"""A plain Python transcription of the chunk coder's encoder (csrc/codec), written from DESIGN §3
and the format notes: integer division instead of reciprocals, one symbol list in coding order
instead of reverse walks, Python ints instead of fixed widths, multi-bit gap symbols built by
recursion. Tests check that the native coder
writes exactly its bytes; benchmarks use its symbol lists to give other coders the very symbols
ours codes. Slow (about a million symbols per second): for checks, not for data."""

from __future__ import annotations

import math
from bisect import bisect_left

PROB_BITS = 28
SCALE = 1 << PROB_BITS
RANS_L = 1 << 31
MASK64 = (1 << 64) - 1
LANES = 4
GROUP_BITS = 4


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


def split_one(w: int, f1: int) -> int:
    """The top share of an interval of width w given to a 1 with P(1) = f1 / 2^28."""
    return 0 if w < 2 else min(max((w * f1) >> PROB_BITS, 1), w - 1)


def bits_interval(value: int, k: int, top: int, bit1: list[int], lo: int, w: int) -> tuple[int, int]:
    """The interval of the k offset bits `value` (bits top-1 .. top-k) within [lo, lo + w)."""
    for j in reversed(range(k)):
        w1 = split_one(w, bit1[top - k + j])
        if (value >> j) & 1:
            lo, w = lo + w - w1, w1
        else:
            w -= w1
    return lo, w


def gap_symbols(pos: list[int], n_seq: int, model) -> list[tuple[int, int]]:
    """Intervals (start, freq) of the active positions pos in a sequence of n_seq rows and of its
    end. Per gap g = t·2^m + r: in a whole block, t "continue"s, then one head symbol (stop and
    the top bits of r), then r's other bits in groups of 4, high to low; in the last partial
    block, t "continue"s, then binary decisions: "empty" per binary digit of the rows left until
    the one holding the gap, then the offset's lower bits. The end is a gap of all that is left."""
    if model is None:
        assert not pos
        return []
    cont, bit1, empty = model
    m = len(bit1)
    low = (m - 1) // GROUP_BITS if m else 0
    head_bits = m - GROUP_BITS * low
    stop = SCALE - cont
    out, cur = [], 0
    for p in pos + [n_seq]:
        gap, rem = p - cur, n_seq - cur
        whole = rem >> m
        if gap >> m < whole:
            r = gap & ((1 << m) - 1)
            out += [(stop, cont)] * (gap >> m)
            out.append(bits_interval(r >> (GROUP_BITS * low), head_bits, m, bit1, 0, stop))
            for i in range(low):
                top = GROUP_BITS * (low - i)
                out.append(bits_interval((r >> (top - GROUP_BITS)) & 15, GROUP_BITS, top, bit1, 0, SCALE))
        else:
            out += [(stop, cont)] * whole
            base, left = whole << m, rem - (whole << m)
            for k in reversed(range(m)):
                if not (left >> k) & 1:
                    continue
                if gap >= base + (1 << k):
                    out.append(bit(True, empty[k]))
                    base += 1 << k
                else:
                    out.append(bit(False, empty[k]))
                    out += [bit(((gap - base) >> j) & 1 == 1, bit1[j]) for j in reversed(range(k))]
                    break
        cur = p + 1
    return out


def rans_stream(symbols: list[tuple[int, int]]) -> list[int]:
    """Four lanes from state 1, symbol i on lane i % 4, encoded in reverse with division."""
    x, words = [1] * LANES, []
    for i in reversed(range(len(symbols))):
        start, freq = symbols[i]
        lane = i % LANES
        s = x[lane]
        if s >= ((RANS_L >> PROB_BITS) << 32) * freq:
            words.append(s & 0xFFFFFFFF)
            s >>= 32
        x[lane] = (s // freq) * SCALE + s % freq + start
        assert x[lane] <= MASK64
    return [w for s in x for w in (s & 0xFFFFFFFF, s >> 32)] + words[::-1]


def stream_symbols(codes, counts: dict, n_rows: int, features_per_stream: int = 0) -> list[list[tuple]]:
    """Per stream of one chunk (SparseCodes `codes`, rows of a file of n_rows rows coded under the
    model whose counts are `counts`: ``_C.Model.counts()``), its symbols in coding order:
    ("gap", start, freq) for an activity symbol (see gap_symbols) and ("value", f, i, start,
    freq) for entry i of feature f's value table."""
    parent = [int(p) for p in counts["parent"]]
    d = len(parent)
    depth = []
    for f in range(d):
        k, p = 0, parent[f]
        while p >= 0:
            k, p = k + 1, parent[p]
        depth.append(k)
    # by depth, with exclusive siblings then by rank among the parent's children (stable by index)
    rank = [sum(1 for s in range(f) if parent[s] == parent[f]) if counts["exclusive"] and parent[f] >= 0 else 0
            for f in range(d)]
    order = sorted(range(d), key=lambda f: (depth[f], rank[f]))
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
                gaps = gap_symbols(rows[f], codes.n_rows, gap_model(int(active[f]), n_rows, int(counts["m_main"][f])))
            else:
                prow = rows[p]
                at = [bisect_left(prow, r) for r in rows[f]]
                with_parent = [a < len(prow) and prow[a] == r for a, r in zip(at, rows[f])]
                off_pos = [r - a for a, r, w in zip(at, rows[f], with_parent) if not w]
                # the main sequence's rows: the parent's, less its earlier siblings' with exclusive siblings
                earlier = [s for s in range(f) if parent[s] == p] if counts["exclusive"] else []
                taken = {r for s in earlier for r in rows[s]} & set(prow)  # off the parent, siblings may meet
                context = [r for r in prow if r not in taken]
                assert not taken & set(rows[f]), f"feature {f} shares a parent row with an earlier sibling"
                total = int(active[p]) - sum(int(on[s]) for s in earlier)
                where = {r: i for i, r in enumerate(context)}
                on_pos = [where[r] for r in rows[f] if r in where]
                gaps = gap_symbols(on_pos, len(context), gap_model(int(on[f]), total, int(counts["m_main"][f])))
                gaps += gap_symbols(off_pos, codes.n_rows - len(prow),
                                    gap_model(int(active[f] - on[f]), n_rows - int(active[p]), int(counts["m_off"][f])))
            out += [("gap", start, freq) for start, freq in gaps]
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
    streams = [rans_stream([s[1:] if s[0] == "gap" else s[3:] for s in syms])
               for syms in stream_symbols(codes, counts, n_rows, features_per_stream)]
    head = [len(w) for w in streams[:-1]]
    return b"".join(int(w).to_bytes(4, "little") for w in head + [w for s in streams for w in s])
