"""Toy activations with ground-truth features (DESIGN §6) and the feature-recovery metric.

``x = z @ F (+ noise)``: row i of F is feature i's random unit direction in d dimensions
(superposition when there are more features than dimensions), z the sparse non-negative true
code. The independent ("base") features fire with power-law rates and uniform magnitudes,
optionally correlated in small groups (a Gaussian copula). On top of them come hierarchical
features (a child fires mostly when its parent fires, at most one child per parent: only then
for strict trees, also with probability ``child_leak`` when the parent is silent for loose ones,
like the write-up's Animal → Bird where a bird-like word need not name an animal) and
AND-composite features (active exactly when both of two base features are). Rows are made in
fixed chunks, each from its own seed, so any number of rows streams to disk in bounded memory
and the first n rows never depend on how many rows were asked for.

Feature layout: ``[0, n_base)`` base features by decreasing rate (the first ``n_parents`` of them
are parents), then ``children`` per parent (and, with ``levels`` > 1, per child, level by
level: Animal → Bird → Sparrow), then the ``n_and`` composites. ``parents`` is the
forest that ``mdlsae dl --parents`` reads (-1 for roots).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import MdlsaeError, expect
from ..fileio import atomic_file

CHUNK_ROWS = 8192


@dataclass
class ToySpec:
    """What a toy dataset looks like; the seed and row count are given separately."""

    d: int = 64
    n_features: int = 256
    mean_active: float = 4.0  # expected number of active base features per row
    exponent: float = 0.5  # base feature i fires with probability ∝ (i+1)^-exponent
    mag_min: float = 0.5  # active magnitudes are uniform in [mag_min, mag_max]
    mag_max: float = 1.5
    noise: float = 0.0  # std of isotropic Gaussian noise added to x
    correlation: float = 0.0  # copula correlation between base features of one group
    group: int = 4  # size of the groups of correlated base features
    n_parents: int = 0  # hierarchy: this many base features get children
    children: int = 2  # children per parent
    child_rate: float = 0.5  # P(one of its children fires | parent fires)
    child_leak: float = 0.0  # P(one of its children fires | parent silent): 0 makes the trees strict
    levels: int = 1  # depth of the trees: each child of level < levels has `children` of its own
    n_and: int = 0  # AND-composite features

    def __post_init__(self) -> None:
        expect(self.d > 0 and self.n_features > 0, "d and n_features must be positive")
        expect(self.n_base >= 2, f"n_features={self.n_features} leaves {self.n_base} base features after "
                                 f"{self.n_tree} tree children and {self.n_and} AND features; need >= 2")
        expect(0 < self.mean_active < self.n_base, f"mean_active must be in (0, {self.n_base}), got {self.mean_active}")
        expect(0 <= self.mag_min <= self.mag_max and self.mag_max > 0,
               f"need 0 <= mag_min <= mag_max, mag_max > 0; got {self.mag_min}, {self.mag_max}")
        expect(self.noise >= 0, f"noise must be >= 0, got {self.noise}")
        expect(0 <= self.correlation < 1, f"correlation must be in [0, 1), got {self.correlation}")
        expect(self.group >= 1, f"group must be >= 1, got {self.group}")
        expect(self.n_parents >= 0 and self.children >= 1 and self.n_and >= 0 and self.levels >= 1,
               "n_parents and n_and must be >= 0, children and levels >= 1")
        expect(self.n_parents <= self.n_base, f"n_parents={self.n_parents} exceeds the {self.n_base} base features")
        expect(0 <= self.child_rate <= 1, f"child_rate must be in [0, 1], got {self.child_rate}")
        expect(0 <= self.child_leak <= 1, f"child_leak must be in [0, 1], got {self.child_leak}")

    @property
    def n_tree(self) -> int:
        """Features below the roots: n_parents · (c + c² + … + c^levels)."""
        return self.n_parents * sum(self.children ** level for level in range(1, self.levels + 1))

    @property
    def n_base(self) -> int:
        return self.n_features - self.n_tree - self.n_and

    def parents(self) -> np.ndarray:
        """int64 [n_features]: the parent of each child, -1 for every other feature. Level l's
        features follow level l-1's, each parent's children together."""
        p = np.full(self.n_features, -1, dtype=np.int64)
        above, at = np.arange(self.n_parents), self.n_base  # the previous level's features
        for _ in range(self.levels):
            level = np.arange(at, at + len(above) * self.children)
            p[level] = np.repeat(above, self.children)
            above, at = level, at + len(level)
        return p


@dataclass
class ToyData:
    x: np.ndarray  # float32 [n_rows, d]
    features: np.ndarray  # float32 [n_features, d], unit rows
    coeffs: np.ndarray  # float32 [n_rows, n_features], the true sparse code
    rates: np.ndarray  # float64 [n_features], empirical firing rates
    parents: np.ndarray  # int64 [n_features], -1 for roots
    and_pairs: np.ndarray  # int64 [n_and, 2], the base features each composite needs


def power_law_rates(n_features: int, mean_active: float, exponent: float) -> np.ndarray:
    """Firing probabilities p_i ∝ (i+1)^-exponent scaled so that sum_i p_i = mean_active."""
    expect(0 < mean_active < n_features, f"mean_active must be in (0, {n_features}), got {mean_active}")
    w = np.arange(1, n_features + 1, dtype=np.float64) ** -exponent
    p = w * mean_active / w.sum()
    for _ in range(50):  # redistribute mass clipped at 1
        over = p > 1
        if not over.any():
            break
        p[over] = 1
        free = ~over
        p[free] *= (mean_active - over.sum()) / p[free].sum()
    return p


def _seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (distinct inputs give unrelated streams)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(2, np.uint64)[0] >> np.uint64(1))


class ToyGenerator:
    """The fixed part of a toy dataset (directions, rates, structure) and its row chunks."""

    def __init__(self, spec: ToySpec, seed: int = 0):
        self.spec, self.seed = spec, int(seed)
        g = torch.Generator().manual_seed(self.seed)
        f = torch.randn(spec.n_features, spec.d, generator=g, dtype=torch.float64)
        self.features = (f / f.norm(dim=1, keepdim=True)).float()
        self.base_rates = torch.from_numpy(power_law_rates(spec.n_base, spec.mean_active, spec.exponent))
        # composites combine two of the more frequent base features, so that they fire at all
        pool = max(2, spec.n_base // 4)
        pairs = torch.combinations(torch.arange(pool), 2)
        self.and_pairs = pairs[torch.randperm(len(pairs), generator=g)[:spec.n_and]]
        expect(len(self.and_pairs) == spec.n_and,
               f"n_and={spec.n_and} exceeds the {len(pairs)} pairs among the {pool} most frequent base features")
        self.parents = spec.parents()

    def chunk(self, index: int) -> torch.Tensor:
        """The true codes z [CHUNK_ROWS, n_features] of chunk ``index``."""
        s, n = self.spec, CHUNK_ROWS
        g = torch.Generator().manual_seed(_seed(self.seed, index, 0))
        if s.correlation > 0:
            n_groups = -(-s.n_base // s.group)
            shared = torch.randn(n, n_groups, generator=g, dtype=torch.float64).repeat_interleave(s.group, 1)
            own = torch.randn(n, s.n_base, generator=g, dtype=torch.float64)
            latent = s.correlation ** 0.5 * shared[:, :s.n_base] + (1 - s.correlation) ** 0.5 * own
            base_on = latent < torch.special.ndtri(self.base_rates)
        else:
            base_on = torch.rand(n, s.n_base, generator=g, dtype=torch.float64) < self.base_rates
        parts = [base_on]
        parent_on = base_on[:, :s.n_parents]
        for _ in range(s.levels if s.n_parents else 0):  # at most one child of each parent fires
            u = torch.rand(n, parent_on.shape[1], generator=g)
            fires = torch.where(parent_on, u < s.child_rate, u < s.child_leak)
            pick = torch.randint(s.children, (n, parent_on.shape[1]), generator=g)
            parent_on = (torch.nn.functional.one_hot(pick, s.children).bool() & fires[..., None]).reshape(n, -1)
            parts.append(parent_on)
        if s.n_and:
            parts.append(base_on[:, self.and_pairs[:, 0]] & base_on[:, self.and_pairs[:, 1]])
        on = torch.cat(parts, dim=1)
        mag = s.mag_min + (s.mag_max - s.mag_min) * torch.rand(n, s.n_features, generator=g)
        return on * mag

    def rows(self, n_rows: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(x, z) chunks covering rows [0, n_rows)."""
        s = self.spec
        for i in range(-(-n_rows // CHUNK_ROWS)):
            z = self.chunk(i)[: n_rows - i * CHUNK_ROWS]
            x = z @ self.features
            if s.noise > 0:
                g = torch.Generator().manual_seed(_seed(self.seed, i, 1))
                x += s.noise * torch.randn(x.shape, generator=g)
            yield x, z


def make_toy(n_rows: int = 120_000, seed: int = 0, **spec) -> ToyData:
    """Ground-truth toy data in memory; ``spec`` are :class:`ToySpec` fields.

    >>> t = make_toy(n_rows=1000, d=16, n_features=32, mean_active=2, seed=1)
    >>> t.x.shape, t.features.shape, round(float((t.coeffs > 0).sum(1).mean()))
    ((1000, 16), (32, 16), 2)
    """
    expect(n_rows >= 0, f"n_rows must be >= 0, got {n_rows}")
    gen = ToyGenerator(ToySpec(**spec), seed)
    chunks = list(gen.rows(n_rows))
    x = torch.cat([c[0] for c in chunks]) if chunks else torch.zeros(0, gen.spec.d)
    z = torch.cat([c[1] for c in chunks]) if chunks else torch.zeros(0, gen.spec.n_features)
    rates = (z > 0).double().mean(0).numpy() if n_rows else np.zeros(gen.spec.n_features)
    return ToyData(x.numpy(), gen.features.numpy(), z.numpy(), rates, gen.parents, gen.and_pairs.numpy())


def write_toy(path: str | os.PathLike, n_rows: int, spec: ToySpec, seed: int = 0,
              truth_path: str | os.PathLike | None = None, dtype=np.float32, progress: bool = False) -> dict:
    """Stream ``n_rows`` toy activations to a ``.npy`` file (atomically) and the ground truth
    (features, rates, parents, and_pairs, spec) to a ``.safetensors`` file; returns the truth."""
    from safetensors.numpy import save

    expect(n_rows > 0, f"n_rows must be positive, got {n_rows}")
    expect(str(path).endswith(".npy"), f"toy activations are written as .npy, got {str(path)!r}")
    gen = ToyGenerator(spec, seed)
    counts = torch.zeros(spec.n_features, dtype=torch.float64)
    with atomic_file(path) as f, tqdm(total=n_rows, disable=not progress, desc="toy rows", unit="row") as bar:
        np.lib.format.write_array_header_1_0(
            f, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": (n_rows, spec.d)})
        for x, z in gen.rows(n_rows):
            f.write(x.numpy().astype(dtype).tobytes())
            counts += (z > 0).sum(0)
            bar.update(len(x))
    truth = {"features": gen.features.numpy(), "rates": (counts / n_rows).numpy(), "parents": gen.parents,
             "and_pairs": gen.and_pairs.numpy()}
    if truth_path is not None:
        meta = {k: str(v) for k, v in asdict(spec).items()}
        meta.update(seed=str(seed), n_rows=str(n_rows))
        with atomic_file(truth_path) as f:
            f.write(save({k: np.ascontiguousarray(v) for k, v in truth.items()}, metadata=meta))
    return truth


def load_truth(path: str | os.PathLike) -> np.ndarray:
    """The true feature directions [n_features, d] from a truth file written by :func:`write_toy`
    (or any .npy / .safetensors holding a 2-D ``features`` array)."""
    path = str(path)
    try:
        if path.endswith(".npy"):
            f = np.load(path, allow_pickle=False)
        else:
            from safetensors.numpy import load_file

            tensors = load_file(path)
            expect("features" in tensors, f"{path}: no 'features' tensor (found {', '.join(tensors)})")
            f = tensors["features"]
    except FileNotFoundError:
        raise MdlsaeError(f"truth file {path!r} does not exist") from None
    except MdlsaeError:
        raise
    except Exception as e:
        raise MdlsaeError(f"{path}: not a readable truth file ({e})") from None
    expect(f.ndim == 2, f"{path}: features must be 2-D [n_features, d], got shape {list(f.shape)}")
    return f.astype(np.float32)


def max_cosine(learned, true) -> np.ndarray:
    """For each true feature, the largest cosine similarity with any learned direction.

    ``learned`` is an SAE (its decoder rows ``W_dec`` are used) or an array [D, d]; ``true`` is [n, d].
    """
    learned = getattr(learned, "W_dec", learned)  # an SAE, without importing the models layer
    if isinstance(learned, torch.Tensor):
        learned = learned.detach().cpu()
    a = torch.as_tensor(np.asarray(learned, dtype=np.float32))
    b = torch.as_tensor(np.asarray(true, dtype=np.float32))
    expect(a.ndim == 2 and b.ndim == 2 and a.shape[1] == b.shape[1],
           f"learned {list(a.shape)} and true {list(b.shape)} directions must be 2-D with the same d")
    a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)
    b = b / b.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (b @ a.T).max(dim=1).values.numpy()


def mmcs(learned, true) -> float:
    """Mean max cosine similarity: how well the learned dictionary recovers the true features
    (1 when every true direction appears among the learned ones).

    >>> f = np.eye(4, dtype=np.float32)
    >>> mmcs(np.concatenate([f, -f]), f)
    1.0
    """
    return float(max_cosine(learned, true).mean())


def hierarchy_recovery(learned, active: np.ndarray, toy: "ToyData", min_cosine: float = 0.9,
                       parents: np.ndarray | None = None) -> dict:
    """How a learned dictionary recovers a toy's planted trees, and how much it absorbs.

    ``learned``: an SAE or its decoder [D, d]; ``active``: bool [n_rows, D], which learned
    latents fire on the toy's rows. Each true feature is matched to its most similar learned
    direction; a planted parent–child pair is recovered when both match with cosine
    >= ``min_cosine``. Over the recovered pairs: ``parent_absorbed``, the share of rows with both
    true features active where the parent's latent is silent (the child latent took it over),
    and ``child_leak``, the share of rows without the true parent where the child's latent
    fires anyway. With ``parents``, the learned forest (a tree SAE's, or one discovered on its
    codes), also ``pairs_in_forest``: the share of planted pairs whose recovered child latent
    has the recovered parent latent as its parent there.

    >>> toy = make_toy(n_rows=2000, d=32, n_features=48, n_parents=4, children=2, child_rate=0.8)
    >>> r = hierarchy_recovery(toy.features, toy.coeffs > 0, toy)  # the truth itself
    >>> r["pairs_recovered"], r["parent_absorbed"], r["child_leak"]
    (1.0, 0.0, 0.0)
    >>> hierarchy_recovery(toy.features, toy.coeffs > 0, toy, parents=toy.parents)["pairs_in_forest"]
    1.0
    """
    learned = getattr(learned, "W_dec", learned)
    if isinstance(learned, torch.Tensor):
        learned = learned.detach().cpu().numpy()
    a = np.asarray(learned, dtype=np.float32)
    b = np.asarray(toy.features, dtype=np.float32)
    active = np.asarray(active, dtype=bool)
    expect(active.shape == (len(toy.coeffs), len(a)),
           f"active must be [{len(toy.coeffs)}, {len(a)}] (toy rows x learned latents), got {list(active.shape)}")
    cos = (b / np.linalg.norm(b, axis=1, keepdims=True)) @ (a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True),
                                                                         1e-12)).T
    match, best = cos.argmax(1), cos.max(1)
    kids = np.flatnonzero(toy.parents >= 0)
    ok = kids[(best[kids] >= min_cosine) & (best[toy.parents[kids]] >= min_cosine)]
    true_on = toy.coeffs > 0
    absorbed, leaked = [], []
    for c in ok:
        p = toy.parents[c]
        both = true_on[:, p] & true_on[:, c]
        without = ~true_on[:, p]
        if both.any():
            absorbed.append(float((~active[both, match[p]]).mean()))
        if without.any():
            leaked.append(float(active[without, match[c]].mean()))
    out = {}
    if parents is not None:
        parents = np.asarray(parents, dtype=np.int64)
        expect(parents.shape == (len(a),), f"parents must be [{len(a)}] (one per learned latent), got "
                                           f"{list(parents.shape)}")
        out["pairs_in_forest"] = float((parents[match[ok]] == match[toy.parents[ok]]).sum()) / max(len(kids), 1)
    return {**out, "pairs": int(len(kids)), "pairs_recovered": len(ok) / max(len(kids), 1),
            "features_recovered": float((best >= min_cosine).mean()),
            "parent_absorbed": float(np.mean(absorbed)) if absorbed else 0.0,
            "child_leak": float(np.mean(leaked)) if leaked else 0.0}
