"""Encode activation datasets to ``.mdl`` files and back (DESIGN §3–4).

``encode`` runs the SAE once over the activations, gathering the per-feature counts (the
entropy model, stored in the header) and keeping the compact codes, then codes row chunks with
the native rANS coder and writes them as they come; memory stays within the budget
(mdlsae.budget) for files larger than RAM and dictionaries of any width.
An SAE on a CUDA device encodes there end to end: the GEMM, the fused select kernel and the
histograms in the first pass, the GPU rANS coder (``streams``) in the second; only compact codes
and finished bytes cross to the host, and the file is the CPU's, byte for byte, whenever the
device's GEMM gives the CPU's pre-activations. ``decode`` returns the quantized codes (all rows or a row range) and, given the SAE, the
reconstruction. ``inspect`` reports the file's bits beside the entropy estimate.

>>> import torch, tempfile, os
>>> from mdlsae.models.sae import SAE, SAEConfig
>>> sae = SAE.random(SAEConfig("topk", d_in=8, d_sae=32, k=3), seed=0)
>>> x = torch.randn(1000, 8)
>>> path = os.path.join(tempfile.mkdtemp(), "a.mdl")
>>> info = encode(x, sae, path, step=0.1)
>>> dec = decode(path, sae)
>>> from mdlsae.measure.kernels import select_quantize
>>> dec.codes == select_quantize(sae.pre_acts(x).detach(), k=3, step=0.1)
True
"""

from __future__ import annotations

import datetime
import json
import math
import os
import shutil
import tempfile
import zlib
from contextlib import ExitStack
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import distributed
from .._version import __version__
from .._native import _C
from ..data.acts import as_activations
from ..measure.codes import SparseCodes, steps_tensor
from .container import MANIFEST, MdlFile, MdlSet, MdlWriter, head_of, open_mdl, pack_header
from .streams import StreamCoder
from ..measure.entropy import FeatureStats, naive_bits_per_row
from ..budget import budget_bytes, rows_for
from ..errors import MdlsaeError, expect
from ..fileio import atomic_dir, atomic_file
from ..measure.dl import scan, step_summary
from ..measure.kernels import Histogram
from ..measure.forest import shape_of
from ..measure.store import CodeStore
from ..models.sae import SAE

CHUNK_BITS = 1 << 21  # payload per chunk that the automatic chunk size aims at
_PILOT_ROWS, _MIN_CHUNK_ROWS, _MAX_CHUNK_ROWS = 8192, 16384, 1 << 20


def auto_chunk_rows(first: SparseCodes) -> int:
    """Rows per chunk for at least :data:`CHUNK_BITS` (2 Mbit) of payload each, from the codes
    of a dataset's first rows (``encode`` takes 8,192): a power of two in [16384, 2^20] from
    their flat DL estimate. Every stream costs ~170 bits beyond the estimate (its flushed lane
    states and their start, bench/README), so 16,384-row chunks left sparse codes at 0.02–0.03 %
    over it; from 2 Mbit on it is < 0.01 %. Fewer rows would not help: each chunk also costs
    O(d_sae) setup (a GPT-2-size dictionary codes 20 % slower in 8,192-row chunks). A function
    of the first rows' codes only, so a distributed run (which codes them once more up front, to
    split the rows on chunks) and a single process pick the same size.

    >>> auto_chunk_rows(SparseCodes(np.arange(1001), np.arange(1000, dtype=np.int32) % 2,
    ...                             np.ones(1000, dtype=np.int32), 2))  # 2 bits a row
    1048576
    """
    hist = Histogram(first.d_sae)
    hist.add_codes(first.index, first.q, first.n_rows)
    stats = FeatureStats(first.n_rows, hist.active_counts(), *hist.to_csr())
    bits_per_row = stats.estimate_bits(conditional=False) / max(first.n_rows, 1)
    want = CHUNK_BITS / max(bits_per_row, 1e-6)
    return int(min(_MAX_CHUNK_ROWS, max(_MIN_CHUNK_ROWS, 1 << max(0, math.ceil(math.log2(want))))))


def build_model(stats: FeatureStats) -> "_C.Model":
    """Entropy model (integer counts and gap parameters) of a dataset's codes."""
    d, n = stats.d_sae, stats.n_rows
    if stats.parents is None:
        parent = np.full(d, -1, dtype=np.int32)
        on = np.zeros(d, dtype=np.int64)
        main_n, main_total = stats.active, np.full(d, n, dtype=np.int64)
        off_n, off_total = np.zeros(d, dtype=np.int64), np.ones(d, dtype=np.int64)
    else:
        parent = stats.parents.astype(np.int32)
        child = parent >= 0
        n_par = np.where(child, stats.active[np.maximum(parent, 0)], n)
        on = np.where(child, stats.active_with_parent, 0).astype(np.int64)
        main_n, main_total = np.where(child, on, stats.active), np.where(child, stats.context_rows(), n)
        over = np.flatnonzero(child & (on > main_total))
        expect(not len(over), f"feature {over[0] if len(over) else 0} and an earlier sibling are active in the same "
                              "rows of their parent, but siblings are coded as exclusive (only a strict tree SAE's "
                              "own forest, whose rule fires at most one child per parent, is)")
        off_n, off_total = np.where(child, stats.active - on, 0), np.where(child, n - n_par, 1)
    m_main = _C.choose_gap_m(main_n.astype(np.int64), main_total.astype(np.int64))
    m_off = _C.choose_gap_m(off_n.astype(np.int64), np.maximum(off_total, 1).astype(np.int64))
    return _C.Model(n, parent, stats.active, on, m_main, m_off, stats.hist_ptr, stats.hist_q, stats.hist_count,
                    exclusive=bool(stats.exclusive and stats.parents is not None))


def stats_from_model(model: "_C.Model") -> FeatureStats:
    c = model.counts()
    parents = c["parent"].astype(np.int64)
    has = bool((parents >= 0).any())
    return FeatureStats(int(model.n_rows), c["active"], c["hist_ptr"], c["hist_q"], c["hist_count"],
                        parents if has else None, c["on"] if has else None, bool(c["exclusive"]) and has)


@dataclass
class MdlInfo:
    """What ``mdlsae inspect`` reports. Bits are totals over the file."""

    n_rows: int
    d_in: int
    d_sae: int
    n_chunks: int
    chunk_rows: int
    estimate_bits: float  # DL estimate of the coded data (conditional when parents are given)
    payload_bits: int  # coded chunks
    model_bits: int  # preamble, header (tables, steps) and chunk index
    file_bytes: int
    naive_bits: float
    l0: float
    sae_hash: str
    step: float | dict
    conditional: bool
    forest: dict | None = None  # the file's parent forest (measure.forest.shape_of) and its flat estimate
    shards: int | None = None  # files of a sharded output (their headers and the manifest are model bits)

    @property
    def overhead(self) -> float:
        """(payload - estimate) / estimate."""
        return (self.payload_bits - self.estimate_bits) / self.estimate_bits if self.estimate_bits else 0.0

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["payload_over_estimate"] = self.overhead
        d["bits_per_row"] = (self.payload_bits + self.model_bits) / max(self.n_rows, 1)
        return d

    def table(self) -> str:
        n = max(self.n_rows, 1)
        rows = [
            ("rows / chunks", f"{self.n_rows:,} / {self.n_chunks} of {self.chunk_rows:,}"),
            ("d_in / d_sae", f"{self.d_in} / {self.d_sae}"),
            ("step", f"{self.step:g}" if isinstance(self.step, float) else
                     f"per feature (float32 [{self.d_sae}]): min {self.step['min']:.4g}, "
                     f"median {self.step['median']:.4g}, max {self.step['max']:.4g}"),
            ("L0", f"{self.l0:.3f}"),
            ("DL estimate" + (" (given parents)" if self.conditional else ""),
             f"{self.estimate_bits:,.0f} bits  ({self.estimate_bits / n:.2f} bits/row)"),
            ("payload", f"{self.payload_bits:,} bits  ({self.payload_bits / n:.2f} bits/row, "
                        f"{100 * self.overhead:+.3f} % vs estimate)"),
            ("model (header + index)", f"{self.model_bits:,} bits"),
            ("file" if self.shards is None else f"{self.shards} files + manifest",
             f"{self.file_bytes:,} bytes  ({8 * self.file_bytes / n:.2f} bits/row)"),
            ("naive L0*(B+log2 D)", f"{self.naive_bits / n:.2f} bits/row"),
            ("SAE sha256", self.sae_hash[:16] + "…"),
        ]
        if self.forest is not None:
            fo = self.forest
            rows.insert(5, ("forest", f"{fo['edges']:,} children in {fo['trees']:,} trees, depth <= {fo['max_depth']}; "
                                      f"strictness median {fo['strictness_median']:.3f}; "
                                      f"{'siblings exclusive; ' if fo['exclusive_siblings'] else ''}flat estimate "
                                      f"{fo['flat_estimate_bits'] / n:.2f} bits/row"))
        w = max(len(r[0]) for r in rows)
        return "\n".join(f"{a:<{w}}  {b}" for a, b in rows)


def encode(acts, sae: SAE, out: str | os.PathLike, step, parents=None, chunk_rows: int | None = None,
           features_per_stream: int = 0, progress: bool = False, sharded: bool = False) -> MdlInfo:
    """Encode ``acts`` with ``sae`` at quantization ``step`` into the file ``out``.

    The SAE runs once per row: the first pass counts (the entropy model goes in the header)
    and keeps the codes in a :class:`~mdlsae.measure.store.CodeStore` (half the memory budget
    in memory, the rest spilled beside ``out``); the second codes them in parallel chunks, on
    the SAE's device (the GPU coder runs one thread per stream: give it streams with
    ``features_per_stream``).
    ``sharded``: ``out`` is a folder of one .mdl per shard file of ``acts``, all coded with the
    model of all rows, and a ``manifest.json`` (:class:`~mdlsae.codec.container.MdlSet`);
    ``decode`` and ``inspect`` read it as one file. ``chunk_rows`` (rows per independently
    decodable chunk) defaults to :func:`auto_chunk_rows`'s.

    Under torch.distributed each rank measures and codes the chunks of its share of the rows
    (whole shards when ``sharded``) and writes them at their offsets in rank 0's temporary file
    (or folder; ``out``'s folder must be one filesystem that every rank sees), renamed into place
    once every rank has succeeded: the output is byte for byte the one a single process writes.
    The header's creation time is ``SOURCE_DATE_EPOCH`` when set (reproducible files), else now."""
    acts = as_activations(acts)
    expect(chunk_rows is None or 0 < chunk_rows <= _C.MAX_CHUNK_ROWS,
           f"chunk_rows must be in [1, {_C.MAX_CHUNK_ROWS:,}], got {chunk_rows}")
    st = steps_tensor(step, sae.d_sae)
    half = budget_bytes() // 2
    spill_dir = os.path.dirname(os.path.abspath(os.fspath(out)))
    n = acts.n_rows
    pilot = min(n, _PILOT_ROWS)
    if chunk_rows is None and distributed.active():  # the ranks' split needs it before the pass
        first = []
        scan(acts, sae, step, on_codes=first.append, rows=(0, pilot), error=False)  # the same rows on every rank
        chunk_rows = auto_chunk_rows(SparseCodes.concat(first, sae.d_sae))
    rows = distributed.share_at(acts.shard_starts) if sharded else distributed.share(n, chunk_rows or 1)
    with CodeStore(sae.d_sae, half, spill_dir) as store:
        stats, _ = scan(acts, sae, step, parents, batch_rows=rows_for(sae.row_bytes(), half), progress=progress,
                        on_codes=store.append, rows=rows, error=False)
        if chunk_rows is None:
            chunk_rows = auto_chunk_rows(store.rows(0, pilot))
        model = build_model(stats)
        per_feature = st.dim() == 1
        blob = model.pack()
        meta = {"format": "mdlsae", "writer": f"mdlsae {__version__}", "d_in": sae.d_in, "d_sae": sae.d_sae,
                "n_rows": n, "chunk_rows": chunk_rows, "features_per_stream": int(features_per_stream),
                "architecture": sae.cfg.architecture, "k": sae.cfg.k, "sae_sha256": sae.content_hash(),
                "compute_dtype": str(sae.compute_dtype).removeprefix("torch."),
                "per_feature_steps": per_feature, "step": None if per_feature else float(st),
                "has_parents": stats.parents is not None, "exclusive_siblings": model.exclusive,
                "model_bytes": len(blob), "created": _created()}
        coder = _device_coder(model, sae.W_enc.device, int(features_per_stream))
        l0 = float(stats.active.sum()) / max(n, 1)
        if sharded:
            def header(rows: int) -> bytes:
                return pack_header({**meta, "n_rows": rows, "model_rows": n}, blob, st.numpy() if per_feature else None)

            _write_shards(out, acts, header, model, store, chunk_rows, int(features_per_stream), progress, coder, l0)
        else:
            header = pack_header(meta, blob, st.numpy() if per_feature else None)
            with _bar(store.n_rows, progress) as bar:
                chunks = _coded_chunks(model, store, chunk_rows, int(features_per_stream), bar, coder=coder, l0=l0)
                if distributed.active():
                    _write_from_ranks(out, header, chunks, spill_dir)
                else:
                    with atomic_file(out) as f:
                        _write_mdl(f, header, -(-n // chunk_rows), chunks)
    return inspect(out)


def _created() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    try:
        when = datetime.datetime.now(datetime.timezone.utc) if not epoch else \
            datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc)
    except (ValueError, OverflowError):
        raise MdlsaeError(f"SOURCE_DATE_EPOCH must be seconds since 1970 (an integer), got {epoch!r}") from None
    return when.isoformat(timespec="seconds")


def _bar(rows: int, progress: bool) -> tqdm:
    return tqdm(total=rows, unit="row", unit_scale=True, disable=not (progress and distributed.is_main()),
                desc="code" if distributed.world() == 1 else f"code (rank 0 of {distributed.world()})")


def _coded_chunks(model: "_C.Model", store: CodeStore, chunk_rows: int, features_per_stream: int, bar: tqdm,
                  start: int = 0, stop: int | None = None, coder: StreamCoder | None = None,
                  l0: float = 1.0) -> Iterator[tuple[bytes, int]]:
    """(payload, rows) of every chunk of the stored codes' rows [start, stop), in order: with the
    CPU coder in parallel groups of up to one chunk per thread, as many as their codes and
    coding buffers (~8 + 32·``l0`` bytes a row) fit in half the memory budget; with a GPU
    ``coder`` as many chunks per call as its buffers fit there."""
    stop = store.n_rows if stop is None else stop
    if coder is None:
        fit = rows_for(int(8 + 32 * l0), budget_bytes() // 2) // chunk_rows
        group = chunk_rows * max(1, min(_C.num_threads(), fit))
    else:
        group = chunk_rows * max(1, rows_for(int(coder.bytes_per_code() * max(1.0, l0)), budget_bytes() // 2)
                                 // chunk_rows)
    for a in range(start, stop, group):
        b = min(a + group, stop)
        codes = store.rows(a, b)
        if coder is None:
            payloads = _C.encode_chunks(model, codes.row_ptr, codes.index, codes.q, chunk_rows, features_per_stream)
        else:
            payloads = coder.encode(*(torch.from_numpy(x) for x in (codes.row_ptr, codes.index, codes.q)),
                                    chunk_rows=chunk_rows)
        for i, p in enumerate(payloads):
            yield p, min(chunk_rows, b - a - i * chunk_rows)
        bar.update(b - a)


def _write_mdl(f, header: bytes, n_chunks: int, chunks: Iterator[tuple[bytes, int]]) -> None:
    w = MdlWriter(f, header, n_chunks)
    for payload, rows in chunks:
        w.add_chunk(payload, rows)
    w.finish()


def _write_shards(out, acts, header, model: "_C.Model", store: CodeStore, chunk_rows: int, features_per_stream: int,
                  progress: bool, coder: StreamCoder | None = None, l0: float = 1.0) -> None:
    """One .mdl per shard of ``acts`` (this rank's: its ``store`` holds their codes) into rank
    0's temporary folder, the manifest, then the folder renamed into place when all succeeded."""
    starts = acts.shard_starts
    i0, i1 = distributed.pieces(len(starts) - 1)
    names = [f"shard_{i:05d}.mdl" for i in range(len(starts) - 1)]
    with ExitStack() as final:
        bar = final.enter_context(_bar(store.n_rows, progress))
        tmp = None
        with distributed.agreed("creating the output folder"):
            if distributed.is_main():
                tmp = final.enter_context(atomic_dir(out))
        tmp = Path(distributed.broadcast(None if tmp is None else str(tmp)))
        with distributed.agreed("writing the shards"):
            for i in range(i0, i1):
                lo, hi = int(starts[i] - starts[i0]), int(starts[i + 1] - starts[i0])
                with open(tmp / names[i], "wb") as f:
                    _write_mdl(f, header(hi - lo), -(-(hi - lo) // chunk_rows),
                               _coded_chunks(model, store, chunk_rows, features_per_stream, bar, lo, hi, coder, l0))
                    f.flush()
                    os.fsync(f.fileno())
        with distributed.agreed("writing the manifest"):
            if distributed.is_main():
                files = [{"file": names[i], "rows": int(starts[i + 1] - starts[i]), "source": acts.shards[i]}
                         for i in range(len(names))]
                manifest = {"format": "mdlsae-shards", "version": 1, "n_rows": acts.n_rows, "files": files}
                (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
                final.close()  # rank 0: the folder into place


def _write_from_ranks(out, header: bytes, chunks: Iterator[tuple[bytes, int]], spill_dir: str) -> None:
    """Every rank codes its chunks into a private temporary file; rank 0 writes the header and
    index (sizes gathered from all ranks) to the output's temporary file, every rank copies its
    chunks to their offsets there, and rank 0 renames it into place only when all succeeded."""
    with tempfile.TemporaryFile(dir=spill_dir, prefix=".mdlsae-chunks-") as mine, ExitStack() as final:
        nbytes, rows, crcs = [], [], []
        with distributed.agreed("coding"):
            for payload, r in chunks:
                mine.write(payload)
                nbytes.append(len(payload)), rows.append(r), crcs.append(zlib.crc32(payload))
        every = distributed.gather((nbytes, rows, crcs))
        head = head_of(header, *([x for part in every for x in part[c]] for c in range(3)))
        offset = len(head) + sum(sum(part[0]) for part in every[:distributed.rank()])
        f = None
        with distributed.agreed("creating the output"):
            if distributed.is_main():
                f = final.enter_context(atomic_file(out))
                f.write(head)
                f.truncate(len(head) + sum(sum(part[0]) for part in every))
                f.flush()
        tmp = distributed.broadcast(f.name if f is not None else None)
        with distributed.agreed("writing the chunks"):
            with open(tmp, "r+b") as g:
                g.seek(offset)
                mine.seek(0)
                shutil.copyfileobj(mine, g)
                g.flush()
                os.fsync(g.fileno())
        with distributed.agreed("renaming the output"):
            final.close()  # rank 0: fsync and rename


def _device_coder(model, device: torch.device, features_per_stream: int) -> StreamCoder | None:
    """The GPU coder for an SAE on a CUDA device, else None (the CPU chunk coder)."""
    if device.type != "cuda":
        return None
    coder = StreamCoder(model, device, features_per_stream)
    if coder.n_streams == 1:
        warnings.warn("the GPU coder runs one thread per stream and features_per_stream=0 makes one stream per "
                      "chunk: pass features_per_stream (e.g. 256) for a fast GPU encode", stacklevel=3)
    return coder


@dataclass
class Decoded:
    codes: SparseCodes
    step: float | np.ndarray
    first_row: int
    reconstruction: torch.Tensor | None = None


def check_sae(f: MdlFile | MdlSet, sae: SAE) -> None:
    """Refuse an SAE other than the one the file names by content hash."""
    if sae.content_hash() != f.meta["sae_sha256"]:
        raise MdlsaeError(f"{f.path}: was encoded with a different SAE (sha256 {f.meta['sae_sha256'][:16]}…, "
                          f"given {sae.content_hash()[:16]}…)")


def decode_file(f: MdlFile | MdlSet, start: int = 0, stop: int | None = None, device=None) -> SparseCodes:
    """Codes of rows [start, stop) of an open file (or sharded output); only the chunks
    covering them are read. On a CUDA ``device`` the GPU decoder (``streams``) decodes them; the
    codes come back as numpy arrays either way."""
    stop = f.n_rows if stop is None else stop
    expect(0 <= start <= stop <= f.n_rows, f"row range [{start}, {stop}) is outside [0, {f.n_rows}]")
    if start == stop:
        return SparseCodes(np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int32), f.d_sae)
    if isinstance(f, MdlSet):
        return SparseCodes.concat([decode_file(g, max(start, lo) - lo, min(stop, hi) - lo, device)
                                   for g, lo, hi in zip(f.files, f.starts[:-1], f.starts[1:])
                                   if lo < stop and hi > start], f.d_sae)
    c0, c1 = start // f.chunk_rows, -(-stop // f.chunk_rows)
    payloads = [f.read_chunk(i) for i in range(c0, c1)]
    rows = [f.chunks[i].rows for i in range(c0, c1)]
    fps = int(f.meta["features_per_stream"])
    if device is not None and torch.device(device).type == "cuda":
        try:
            row_ptr, index, q = (t.cpu().numpy() for t in StreamCoder(f.model, device, fps).decode(payloads, rows))
        except MdlsaeError as e:
            raise MdlsaeError(f"{f.path}: {e}") from None
    else:
        try:
            row_ptr, index, q = _C.decode_chunks(f.model, payloads, rows, fps)
        except RuntimeError as e:
            raise MdlsaeError(f"{f.path}: damaged: {e}") from None
    return SparseCodes(row_ptr, index, q, f.d_sae).slice(start - c0 * f.chunk_rows, stop - c0 * f.chunk_rows)


def decode(path: str | os.PathLike, sae: SAE | None = None, start: int = 0, stop: int | None = None) -> Decoded:
    """Decode rows [start, stop) of a .mdl file; with ``sae`` (checked by content hash) also
    reconstruct the activations, on the SAE's device (where a CUDA SAE's codes are also decoded)."""
    with open_mdl(path) as f:
        if sae is not None:
            check_sae(f, sae)
        codes = decode_file(f, start, stop, None if sae is None else sae.W_dec.device)
        recon = None
        if sae is not None:
            with torch.no_grad():
                recon = codes.reconstruct(f.step, sae.W_dec, sae.b_dec)
        return Decoded(codes, f.step, start, recon)


def inspect(path: str | os.PathLike) -> MdlInfo:
    """What a .mdl file (or sharded output, its files and manifest together) holds."""
    with open_mdl(path) as f:
        stats = stats_from_model(f.model)
        n = max(f.n_rows, 1)
        l0 = float(stats.active.sum()) / n
        step = f.step if isinstance(f.step, float) else step_summary(f.step, f.d_sae)
        return MdlInfo(n_rows=f.n_rows, d_in=int(f.meta["d_in"]), d_sae=f.d_sae, n_chunks=len(f.chunks),
                       chunk_rows=f.chunk_rows, estimate_bits=stats.estimate_bits(),
                       payload_bits=8 * f.payload_bytes, model_bits=8 * (f.header_bytes + f.index_bytes),
                       file_bytes=f.file_bytes, naive_bits=naive_bits_per_row(l0, f.d_sae, stats.max_q()) * n,
                       l0=l0, sae_hash=f.meta["sae_sha256"], step=step, conditional=stats.parents is not None,
                       shards=len(f.files) if isinstance(f, MdlSet) else None,
                       forest=None if stats.parents is None else
                       {**shape_of(stats.parents, stats.active, stats.active_with_parent),
                        "exclusive_siblings": stats.exclusive, "flat_estimate_bits": stats.estimate_bits(conditional=False)})
