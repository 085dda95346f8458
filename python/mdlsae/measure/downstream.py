"""Downstream losses (seed 002 §6): what the model does when the SAE's quantized reconstruction
is spliced back in at the site its activations came from, as a tolerance for effective precision.

A :class:`DownstreamLoss` is the ``loss(x, x_hat)`` callable that :mod:`mdlsae.selection.precision`
accepts. It rebuilds the token windows that ``extract`` ran (from the ``<name>.tokens.npy`` ids
or the text) so that row r of the activations is one real-token position; a splice replaces
exactly those positions (never [CLS]/[SEP], BOS or padding, whose activations are not rows) and
leaves the rest of the forward as it was. Metrics:

- ``ce``: increase of the mean next-token cross-entropy (nats/token) of a causal LM with its head;
- ``kl``: mean per-token KL(clean ‖ spliced) of the next-token distributions (nats);
- ``embedding``: mean over windows of 1 − cos between the clean and the spliced pooled sentence
  embedding (pooling as the sentence-transformers model's ``1_Pooling`` says; mean by default).

The clean pass, run once, caches per batch the tokens, the clean outputs and the hidden state
where the splice enters. Each evaluation is then one batched pass over the evaluation tokens
that runs only what follows the site: the blocks before it are stood in for by the cached
state (``resid``: block L's output with the rows replaced; ``mlp_out``: block L's input, the
MLP's output replaced by a hook). Beside it, the clean model's own figures: clean CE and every
metric with the site's activations zero-ablated (how "CE loss recovered" is reported), and a
check on every call that the rows given are the activations the model computes at the site.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..budget import budget_bytes, rows_for
from ..data.extract import (hook_module, load_model, pad_batch, resolve_model, transformer_blocks, window_length,
                            windows_of_ids, windows_of_text)
from ..errors import MdlsaeError, expect

METRICS = ("ce", "kl", "embedding")
POOLINGS = ("mean", "cls", "max")
ALIGN_TOL = 0.02  # per-row relative error allowed between the given rows and the model's own (float16 files: ~1e-3)


def sentence_pooling(model_dir: str) -> str:
    """The pooling of a sentence-transformers model directory (mean when it says nothing);
    refuses models whose embedding has modules beyond transformer, pooling and normalisation."""
    root = Path(model_dir)
    modules = root / "modules.json"
    if modules.is_file():
        kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in json.loads(modules.read_text())]
        other = [k for k in kinds if k not in ("Transformer", "Pooling", "Normalize")]
        expect(not other, f"{model_dir}: the sentence embedding has modules {other} that mdlsae does not apply; "
                          f"the embedding metric supports transformer + pooling (+ normalize)")
    cfg = root / "1_Pooling" / "config.json"
    if not cfg.is_file():
        return "mean"
    on = [k for k, v in json.loads(cfg.read_text()).items() if k.startswith("pooling_mode_") and v is True]
    modes = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max"}
    expect(len(on) == 1 and on[0] in modes, f"{cfg}: unsupported pooling {on}; supported: {', '.join(POOLINGS)}")
    return modes[on[0]]


def pool(hidden: torch.Tensor, attention: torch.Tensor, how: str) -> torch.Tensor:
    """Sentence embeddings [windows, d] of the last hidden state, over the attended positions."""
    if how == "cls":
        return hidden[:, 0].float()
    mask = attention.unsqueeze(-1).bool()
    if how == "max":
        return hidden.float().masked_fill(~mask, float("-inf")).amax(1)
    return (hidden.float() * mask).sum(1) / mask.sum(1).clamp_min(1)


@dataclass
class _Batch:
    input_ids: torch.Tensor
    attention: torch.Tensor
    pos: torch.Tensor  # bool [windows, width]: the positions whose activations are rows a..b
    a: int
    b: int
    start: tuple | None  # (clean hidden state, rest of the block's output) replayed; None: nothing is
    clean: torch.Tensor | None  # kl: clean log-probs [tokens, V]; embedding: pooled [windows, d]


class _Replay(torch.nn.Module):
    """Stand-in for a block before the site: returns the cached state, whatever its input."""

    def __init__(self, owner: "DownstreamLoss"):
        super().__init__()
        self.owner = owner

    def forward(self, *args, **kwargs):
        h, rest = self.owner._replay
        return h if rest is None else (h, *rest)


class DownstreamLoss:
    """``loss(x, x_hat)``: the downstream loss of the first ``n_rows`` rows' reconstruction
    spliced into the model at (``layer``, ``site``). ``windows`` are the extraction's token
    windows (see :func:`downstream_loss`)."""

    def __init__(self, metric: str, tok, model, windows, layer: int, site: str, n_rows: int,
                 pooling: str = "mean", device: str = "cpu", batch_windows: int | None = None,
                 progress: bool = False):
        expect(metric in METRICS, f"downstream metric must be one of {', '.join(METRICS)}, got {metric!r}")
        expect(pooling in POOLINGS, f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.__name__ = metric
        self.metric, self.model, self.pooling, self.device = metric, model, pooling, device
        self.progress = progress
        blocks = transformer_blocks(model)
        self.layer = layer % len(blocks)
        self.site, self.blocks = site, blocks
        self.site_module = hook_module(model, self.layer, site)
        # resid: blocks 0..L replay block L's output (rows replaced); mlp_out: blocks 0..L-1 replay
        # block L's input, and block L runs with its MLP's output replaced
        self.n_replayed = self.layer + 1 if site == "resid" else self.layer
        self._replay: tuple[torch.Tensor, tuple | None] | None = None
        self._splice: torch.Tensor | None = None
        windows = self._cover(windows, n_rows)
        vocab = getattr(model.config, "vocab_size", 0) if metric != "embedding" else 0
        width = max(len(w) for w, _ in windows)
        if batch_windows is None:  # logits, log-probs and their temporaries, or the model's hidden states
            per_token = 12 * vocab if vocab else 64 * 4 * model.config.hidden_size
            batch_windows = rows_for(width * per_token, at_most=64)
        if metric == "kl":
            cache = 4 * vocab * sum(len(w) for w, _ in windows)
            expect(cache <= budget_bytes(), f"kl keeps the clean log-probabilities: {cache / 2**20:,.0f} MiB for "
                                            f"{n_rows:,} tokens x {vocab:,} classes is over the memory budget "
                                            f"({budget_bytes() / 2**20:,.0f} MiB); lower --max-tokens or raise --memory")
        self.n_rows = n_rows
        self.batches: list[_Batch] = []
        self.site_rows = self._clean_pass(windows, batch_windows, tok)
        self.reference = {"tokens": self.n_rows, "layer": self.layer, "site": self.site,
                          "zero_ablated": self._evaluate(torch.zeros_like(self.site_rows))}
        if metric == "ce":
            self.reference["clean_ce"] = self.clean_ce
        self.evaluations = 0
        self._bar = tqdm(desc=f"{metric} evaluations", unit="pass", disable=not progress)

    @staticmethod
    def _cover(windows, n_rows: int):
        """The windows holding the first ``n_rows`` real tokens; the last one's later tokens stay clean."""
        out, left = [], n_rows
        for ids, real in windows:
            if left <= 0:
                break
            real = real & (np.cumsum(real) <= left)
            out.append((ids, real))
            left -= int(real.sum())
        expect(left <= 0, f"the token windows hold only {n_rows - left:,} real tokens, fewer than the "
                          f"{n_rows:,} rows to evaluate")
        return out

    @contextlib.contextmanager
    def _hooked(self, capture: dict | None):
        """Clean pass (``capture``: record the site and the entry state) or evaluation pass
        (replay the cached state into the blocks before the site, splice the MLP output)."""
        handles, saved = [], list(self.blocks[:self.n_replayed])
        entry = self.blocks[self.n_replayed - 1] if self.n_replayed else None

        def site_hook(mod, inp, out):
            h = out[0] if isinstance(out, tuple) else out
            if capture is not None:
                capture["site"] = h
                return None
            if self.site == "resid":
                return None
            h = h.clone()
            h[self._pos] = self._splice.to(h.dtype)
            return (h, *out[1:]) if isinstance(out, tuple) else h

        def entry_hook(mod, inp, out):
            capture["entry"] = (out[0], tuple(out[1:])) if isinstance(out, tuple) else (out, None)

        try:
            handles.append(self.site_module.register_forward_hook(site_hook))
            if capture is not None and entry is not None:
                handles.append(entry.register_forward_hook(entry_hook))
            if capture is None:
                for i in range(self.n_replayed):
                    self.blocks[i] = _Replay(self)
            yield
        finally:
            for i, blk in enumerate(saved):
                self.blocks[i] = blk
            for h in handles:
                h.remove()

    def _forward(self, batch_ids, attention):
        kw = {"use_cache": False} if self.metric != "embedding" else {}
        return self.model(input_ids=batch_ids, attention_mask=attention, **kw)

    def _token_terms(self, out, batch: _Batch) -> torch.Tensor:
        """ce: the next-token cross-entropy of every predicted token; kl: its log-probs."""
        logp = torch.log_softmax(out.logits.float(), dim=-1)
        if self.metric == "kl":
            return logp[batch.attention.bool()]
        att = batch.attention.bool()
        valid = att[:, 1:] & att[:, :-1]
        nll = -logp[:, :-1].gather(-1, batch.input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        return nll[valid]

    def _clean_pass(self, windows, batch_windows: int, tok) -> torch.Tensor:
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        rows, a, nll_sum, n_pred = [], 0, 0.0, 0
        bar = tqdm(total=self.n_rows, unit="tok", desc=f"{self.metric}: clean pass", disable=not self.progress)
        with torch.inference_mode():
            for s in range(0, len(windows), batch_windows):
                ids, att, _ = pad_batch(windows[s:s + batch_windows], pad)
                pos = torch.zeros_like(ids, dtype=torch.bool)
                for i, (_, real) in enumerate(windows[s:s + batch_windows]):
                    pos[i, :len(real)] = torch.from_numpy(real)
                ids, att, pos = ids.to(self.device), att.to(self.device), pos.to(self.device)
                cap: dict = {}
                with self._hooked(cap):
                    out = self._forward(ids, att)
                site = cap["site"][pos].float()
                rows.append(site.cpu())
                batch = _Batch(ids, att, pos, a, a + len(site), cap.get("entry"), None)
                if self.metric == "embedding":
                    batch.clean = pool(out.last_hidden_state, att, self.pooling)
                else:
                    terms = self._token_terms(out, batch)
                    if self.metric == "kl":
                        batch.clean = terms
                    else:
                        nll_sum, n_pred = nll_sum + float(terms.sum()), n_pred + len(terms)
                self.batches.append(batch)
                a += len(site)
                bar.update(len(site))
        bar.close()
        self.clean_ce = nll_sum / max(n_pred, 1)
        self._n_pred = n_pred
        return torch.cat(rows)

    def _evaluate(self, x_hat: torch.Tensor) -> float:
        """The metric with rows ``x_hat`` [n_rows, d] spliced in: one pass over the batches."""
        total, count = 0.0, 0
        with torch.inference_mode(), self._hooked(None):
            for bt in self.batches:
                rows = x_hat[bt.a:bt.b].to(self.device)
                self._pos, self._splice = bt.pos, rows
                if bt.start is not None:
                    h, rest = bt.start
                    if self.site == "resid":
                        h = h.clone()
                        h[bt.pos] = rows.to(h.dtype)
                    self._replay = (h, rest)
                out = self._forward(bt.input_ids, bt.attention)
                if self.metric == "embedding":
                    emb = pool(out.last_hidden_state, bt.attention, self.pooling)
                    total += float((1 - torch.nn.functional.cosine_similarity(emb, bt.clean, dim=-1)).sum())
                    count += len(emb)
                    continue
                terms = self._token_terms(out, bt)
                if self.metric == "kl":  # KL(clean || spliced) per token
                    total += float((bt.clean.exp() * (bt.clean - terms)).sum())
                else:
                    total += float(terms.sum())
                count += len(terms)
        self._replay = self._splice = None
        mean = total / max(count, 1)
        return mean - self.clean_ce if self.metric == "ce" else mean

    def __call__(self, x: torch.Tensor, x_hat: torch.Tensor) -> float:
        n = self.n_rows
        expect(x.shape[0] >= n and x.shape[1] == self.site_rows.shape[1],
               f"the {self.metric} metric evaluates {n:,} rows of d={self.site_rows.shape[1]}, "
               f"got {x.shape[0]:,} rows of d={x.shape[1]}")
        err = (x[:n].float() - self.site_rows).norm(dim=1) / self.site_rows.norm(dim=1).clamp_min(1e-12)
        worst = int(err.argmax())
        if float(err[worst]) > ALIGN_TOL:
            raise MdlsaeError(
                f"the rows are not the activations the model computes at layer {self.layer} {self.site} for these "
                f"tokens (row {worst}: relative difference {float(err[worst]):.3g}); pass the model, --layer, "
                f"--site, --seq-len and the tokens (or text) the activations were extracted with")
        loss = self._evaluate(x_hat[:n].float())
        self.evaluations += 1
        self._bar.update(1)
        self._bar.set_postfix_str(f"{self.metric} {loss:.4g}")
        return loss

    def close(self) -> None:
        self._bar.close()

    def figures(self, loss: float) -> dict:
        """What to print beside a loss: the reference figures and, for ce, the CE loss recovered."""
        out = {"metric": self.metric, **self.reference}
        if self.metric == "ce":
            out["ce"] = self.clean_ce + loss
            gap = self.reference["zero_ablated"]
            out["ce_loss_recovered"] = 1 - loss / gap if gap > 0 else float("nan")
        return out


def downstream_loss(metric: str, layer: int, n_rows: int, tokens: np.ndarray | None = None, text: str | None = None,
                    model: str | None = None, site: str = "resid", seq_len: int = 256, device: str = "cpu",
                    progress: bool = False) -> DownstreamLoss:
    """The downstream ``metric`` of a model (a local Hugging Face directory, default
    all-MiniLM-L6-v2) at (``layer``, ``site``) over the first ``n_rows`` real tokens, given by
    their ids (``tokens``, from ``<name>.tokens.npy``) or by the ``text`` extracted from, in the
    windows of ``seq_len`` that ``extract`` used."""
    expect((tokens is None) != (text is None), "give the token ids or the text the activations came from (one)")
    expect(n_rows >= 1, f"the downstream metric needs at least one token, got {n_rows}")
    expect(metric in METRICS, f"downstream metric must be one of {', '.join(METRICS)}, got {metric!r}")
    tok, lm = load_model(model, device, lm_head=metric != "embedding")
    seq_len = window_length(tok, lm, seq_len)
    if tokens is not None:
        expect(tokens.ndim == 1 and np.issubdtype(tokens.dtype, np.integer),
               f"token ids must be a 1-D integer array, got {tokens.dtype} of shape {list(tokens.shape)}")
        windows = windows_of_ids(tokens[:n_rows + seq_len], tok, seq_len)
        full = sum(int(real.sum()) for _, real in windows[:-1])
        short = int(windows[-1][1].sum()) < int(windows[0][1].sum())
        if len(windows) > 1 and short and len(tokens) <= n_rows + seq_len and n_rows > full:
            # the file's last window may have run with more text than the ids kept (extract
            # --max-tokens cuts mid-window): evaluate the full windows only
            n_rows = full
    else:
        windows = windows_of_text(text, tok, seq_len)
    pooling = sentence_pooling(resolve_model(model)) if metric == "embedding" else "mean"
    return DownstreamLoss(metric, tok, lm, windows, layer, site, n_rows, pooling, device, progress=progress)
