"""Subcommands of the ``mdlsae`` CLI, one module each, and their shared argument types."""

from __future__ import annotations

import argparse
import math


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text}")
    return v


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def add_distributed_flag(p: argparse.ArgumentParser) -> None:
    """``--distributed``: run on the ranks ``torchrun`` started (found without the flag, too)."""
    p.add_argument("--distributed", action="store_true",
                   help="split the rows across the processes torchrun starts (gloo on CPU, NCCL on GPU): "
                        "`torchrun --nproc-per-node N -m mdlsae.cli ...`; results are those of one process. "
                        "Detected from torchrun's environment without the flag; with it, insist on it")


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars when asked for and stderr is a terminal (only rank 0 draws them)."""
    import sys

    return bool(args.progress) and sys.stderr.isatty()


def add_progress_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="do not show progress bars")


def memory_size(text: str) -> str:
    from ..budget import parse_bytes
    from ..errors import MdlsaeError

    try:
        parse_bytes(text)
    except MdlsaeError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def add_memory_flag(p: argparse.ArgumentParser) -> None:
    """``--memory``: the byte budget of every batch's dense intermediates (mdlsae.budget)."""
    p.add_argument("--memory", type=memory_size, metavar="BYTES",
                   help="memory budget for batches, e.g. 256M (default) or 4G; also the MDLSAE_MEMORY "
                        "environment variable. Peak memory is about the SAE's weights plus this")


def add_device_flag(p: argparse.ArgumentParser) -> None:
    """``--device``: where the SAE runs (read back with :func:`load_sae`)."""
    p.add_argument("--device", default="cpu", metavar="DEVICE",
                   help="where the SAE runs: cpu (default), cuda or cuda:N; on a GPU the GEMM, the fused select "
                        "kernel and the histograms run there (and, for encode and decode, the rANS coder), the "
                        "batches going to the device once each; a downstream --metric runs its model there too")


def device_from(text: str):
    """The torch device named by ``--device``, refusing one this machine lacks."""
    import torch

    from ..errors import MdlsaeError

    try:
        dev = torch.device(text)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise MdlsaeError(f"--device must be cpu, cuda or cuda:N, got {text!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MdlsaeError(f"--device {text}: this torch ({torch.__version__}) sees no CUDA device")
    return dev


def add_threads_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=positive_int,
                   help="torch CPU threads (default: torch's choice; 1 is fastest on a busy machine)")


def set_threads(n: int | None) -> None:
    if n is not None:
        import torch

        torch.set_num_threads(n)


def add_acts_argument(p: argparse.ArgumentParser, what: str = "activations") -> None:
    p.add_argument("acts", metavar="ACTS",
                   help=f"{what} [N, d_in] (or [..., d_in], read as rows): .npy (float32/16/64, "
                        "memory-mapped), .safetensors, .npz, .pt, a datasets .arrow shard, or a directory "
                        "or quoted glob of shards (SAELens's activation cache folder included)")
    p.add_argument("--key", help="which tensor (or Arrow column, e.g. a hook name) to read when ACTS holds "
                                 "several; default: the only one, or the only floating-point one")


def open_acts(args: argparse.Namespace):
    """The activations named by ``add_acts_argument``'s arguments."""
    from ..data.acts import Activations

    return Activations(args.acts, key=args.key)


def add_dtype_flag(p: argparse.ArgumentParser) -> None:
    """``--dtype``: the encoder GEMM's precision (mdlsae.models.sae.SAE.set_compute_dtype)."""
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                   help="precision of the encoder GEMM (default float32). bfloat16/float16 halve the "
                        "pre-activations' memory and speed up GPUs (on CPUs without half-precision units "
                        "they are much slower), but a latent whose pre-activation "
                        "rounds across a TopK, threshold or quantization boundary gets another code "
                        "(bench/README.md: how often); an encoded file records the dtype")


def load_sae(args: argparse.Namespace):
    """The SAE named by ``--sae``, on the ``--device`` of ``add_device_flag`` and in the
    ``--dtype`` of ``add_dtype_flag`` (where the command has them)."""
    from ..models.sae import SAE

    sae = SAE.load(args.sae).set_compute_dtype(getattr(args, "dtype", "float32"))
    return sae.to(device_from(getattr(args, "device", "cpu")))


def add_metric_arguments(p: argparse.ArgumentParser) -> None:
    """``--metric`` (MSE, FVU or a downstream loss) and what a downstream loss needs: the model,
    the site the activations came from, and the tokens they were extracted over."""
    from ..measure.downstream import METRICS as DOWNSTREAM
    from ..selection.precision import METRICS

    p.add_argument("--metric", choices=METRICS + DOWNSTREAM, default="mse",
                   help="loss: mse / fvu of the reconstruction; or run the model with it spliced back in at "
                        "--layer/--site: ce (increase of next-token cross-entropy, causal LMs with a head), kl "
                        "(per-token KL of the next-token distributions), embedding (1 - cos of the pooled "
                        "sentence embedding, e.g. all-MiniLM-L6-v2)")
    g = p.add_argument_group("downstream metrics (ce, kl, embedding; need mdlsae[lm])")
    g.add_argument("--model", metavar="PATH_OR_NAME",
                   help="local Hugging Face model the activations came from (default all-MiniLM-L6-v2)")
    g.add_argument("--layer", type=int, help="its block the activations came from (as given to mdlsae extract)")
    g.add_argument("--site", choices=["resid", "mlp_out"], default="resid", help="as given to mdlsae extract")
    g.add_argument("--tokens", metavar="TOKENS.npy",
                   help="the token ids mdlsae extract wrote beside the activations (default: ACTS.tokens.npy)")
    g.add_argument("--text", metavar="FILE", help="or the text the activations were extracted from")
    g.add_argument("--seq-len", type=positive_int, default=256, help="tokens per window, as given to mdlsae extract")
    g.add_argument("--max-tokens", type=positive_int, default=8192,
                   help="measure the downstream loss over the first N tokens (default 8192); every step "
                        "evaluation is one model pass over them")


def metric_from(args: argparse.Namespace, acts, progress: bool, max_rows: int | None = None):
    """The metric named by ``add_metric_arguments``'s arguments: its name for MSE/FVU, else the
    downstream loss over the first ``--max-tokens`` rows of ``acts`` (an Activations; at most
    ``max_rows``)."""
    from pathlib import Path

    from ..errors import MdlsaeError, expect

    if args.metric in ("mse", "fvu"):
        return args.metric
    import numpy as np

    from ..measure.downstream import downstream_loss

    expect(args.layer is not None, f"--metric {args.metric} needs --layer (the block the activations came from)")
    expect(not (args.text and args.tokens), "give --tokens or --text, not both")
    text = tokens = None
    if args.text:
        try:
            text = Path(args.text).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise MdlsaeError(f"cannot read --text {args.text}: {e}") from None
    else:
        src = acts.name
        path = args.tokens or (src[:-4] + ".tokens.npy" if src.endswith(".npy") else None)
        expect(path is not None and Path(path).is_file(),
               f"--metric {args.metric} needs the token ids of the activations: "
               + (f"{path} does not exist" if path else f"{src} is not an .npy with ids beside it")
               + " (mdlsae extract writes ACTS.tokens.npy); pass --tokens or --text")
        try:
            tokens = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise MdlsaeError(f"{path}: not a readable .npy file ({e})") from None
        expect(len(tokens) == acts.n_rows,
               f"{path} holds {len(tokens):,} token ids but the activations have {acts.n_rows:,} rows")
    n = min(args.max_tokens, acts.n_rows, max_rows or acts.n_rows)
    return downstream_loss(args.metric, args.layer, n, tokens, text, args.model, args.site, args.seq_len,
                           getattr(args, "device", "cpu"), progress)
