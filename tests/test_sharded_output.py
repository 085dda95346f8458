"""``encode --sharded``: one .mdl per input shard with a shared entropy model and a manifest,
read by decode and inspect as one file; a damaged or mixed-up set is refused clearly."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from mdlsae import MdlsaeError
from mdlsae.codec import decode, encode, inspect
from mdlsae.codec.container import MdlSet

from conftest import make_sae

CUTS = [0, 700, 1000, 1000, 2600, 3000]  # an empty shard included


@pytest.fixture()
def shards(tmp_path, toy):
    folder = tmp_path / "acts"
    folder.mkdir()
    for i, (a, b) in enumerate(zip(CUTS, CUTS[1:])):
        np.save(folder / f"part_{i}.npy", toy.x[a:b])
    return folder


def test_sharded_output_reads_as_one_file(tmp_path, toy, shards):
    sae = make_sae("topk")
    one = encode(toy.x, sae, tmp_path / "one.mdl", step=0.1, chunk_rows=256)
    many = encode(shards, sae, tmp_path / "many", step=0.1, chunk_rows=256, sharded=True)
    names = sorted(p.name for p in (tmp_path / "many").iterdir())
    assert names == ["manifest.json"] + [f"shard_{i:05d}.mdl" for i in range(5)]
    assert many.shards == 5 and many.n_rows == one.n_rows == 3000
    assert many.estimate_bits == one.estimate_bits  # one entropy model: that of all rows
    # each file restarts its chunks, so the payload is a little larger than the one file's
    assert one.payload_bits <= many.payload_bits < 1.02 * one.payload_bits
    whole = decode(tmp_path / "one.mdl", sae)
    assert decode(tmp_path / "many", sae).codes == whole.codes
    for a, b in [(650, 1800), (999, 1001), (1000, 1000), (2600, 3000)]:  # across shard boundaries
        assert decode(tmp_path / "many", start=a, stop=b).codes == whole.codes.slice(a, b)
    with MdlSet(tmp_path / "many") as s:
        assert s.sources == [f"part_{i}.npy" for i in range(5)]


def test_damaged_sets_are_refused(tmp_path, toy, shards):
    sae = make_sae("topk")
    encode(shards, sae, tmp_path / "a", step=0.1, chunk_rows=256, sharded=True)
    encode(shards, sae, tmp_path / "b", step=0.2, chunk_rows=256, sharded=True)
    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "a", bad)
    shutil.copy(tmp_path / "b" / "shard_00001.mdl", bad / "shard_00001.mdl")
    with pytest.raises(MdlsaeError, match="shard_00001.mdl: its SAE, steps or entropy model differ"):
        inspect(bad)
    (bad / "shard_00001.mdl").unlink()
    with pytest.raises(MdlsaeError, match="shard_00001.mdl' does not exist"):
        inspect(bad)
    m = json.loads((tmp_path / "a" / "manifest.json").read_text())
    m["files"][0]["rows"] += 1
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(MdlsaeError, match="shard rows add up to 3001"):
        inspect(bad)
    (bad / "manifest.json").unlink()
    with pytest.raises(MdlsaeError, match="without manifest.json"):
        decode(bad)
