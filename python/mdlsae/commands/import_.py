"""``mdlsae import``: convert an SAE from dictionary_learning, EleutherAI sparsify, SAELens or the
Gemma/Llama/Qwen Scope releases into mdlsae's SAELens-layout directory (see mdlsae.models.formats)."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("import", help="convert another library's SAE into the SAELens layout",
                       description="Read SRC and write it to SAE_DIR in the SAELens layout (cfg.json + "
                                   "sae_weights.safetensors), with the source's forward pass folded exactly "
                                   "into a topk, jumprelu or relu SAE. SRC: a SAELens directory (any version, "
                                   "gated and batchtopk/matryoshka training checkpoints included), a Gemma Scope "
                                   "params.npz / Gemma Scope 2 params.safetensors, a Llama Scope folder "
                                   "(hyperparams.json), a Qwen Scope *.sae.pt, a dictionary_learning ae.pt "
                                   "(or its folder, or checkpoints/ae_N.pt) or a sparsify hookpoint folder. "
                                   "Formats mdlsae cannot read exactly (transcoders, skip connections, "
                                   "signed latents, groupmax) are refused.")
    p.add_argument("src", metavar="SRC")
    p.add_argument("-o", "--out", required=True, metavar="SAE_DIR")
    # choices are checked by import_sae: listing them here would import torch for every --help
    p.add_argument("--format", default="auto",
                   help="source layout: auto (default), saelens, gemma_scope, gemma_scope_2, llama_scope, "
                        "qwen_scope, dictionary_learning or sparsify")
    p.add_argument("--class", dest="dl_class", metavar="CLASS",
                   help="dictionary_learning class (AutoEncoderTopK or BatchTopKSAE, ...) for an ae.pt "
                        "without config.json whose keys fit several")
    p.set_defaults(run=run)


def run(args) -> int:
    from pathlib import Path

    from ..models.formats import detect_format, import_sae

    fmt = detect_format(Path(args.src)) if args.format == "auto" else args.format
    sae = import_sae(args.src, fmt, dl_class=args.dl_class)
    sae.save(args.out)
    k = f" k={sae.cfg.k}" if sae.cfg.k else ""
    print(f"imported {fmt} SAE: {sae.cfg.architecture} d_in={sae.d_in} d_sae={sae.d_sae}{k} -> {args.out}")
    return 0
