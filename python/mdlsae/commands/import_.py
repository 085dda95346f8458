"""``mdlsae import``: convert an SAE from dictionary_learning, EleutherAI sparsify or SAELens into
mdlsae's SAELens-layout directory (see mdlsae.importers)."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("import", help="convert a dictionary_learning / sparsify / SAELens SAE",
                       description="Read SRC (a dictionary_learning ae.pt + config.json directory, a "
                                   "sparsify hookpoint directory with cfg.json + sae.safetensors, or a "
                                   "SAELens directory) and write it to SAE_DIR in the SAELens layout.")
    p.add_argument("src", metavar="SRC")
    p.add_argument("-o", "--out", required=True, metavar="SAE_DIR")
    p.add_argument("--format", choices=["auto", "dictionary_learning", "sparsify", "saelens"], default="auto")
    p.set_defaults(run=run)


def run(args) -> int:
    from pathlib import Path

    from ..models.importers import detect_format, import_sae

    fmt = detect_format(Path(args.src)) if args.format == "auto" else args.format
    sae = import_sae(args.src, fmt)
    sae.save(args.out)
    k = f" k={sae.cfg.k}" if sae.cfg.k else ""
    print(f"imported {fmt} SAE: {sae.cfg.architecture} d_in={sae.d_in} d_sae={sae.d_sae}{k} -> {args.out}")
    return 0
