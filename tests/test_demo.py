"""``mdlsae demo``: at the same tolerance the DL picks the SAE of the true width, L0 alone a wider
one, and the chosen SAE's real file matches its DL estimate. Smaller sizes than the CLI's
default (which trains 5 SAEs on 30k rows, ~40 s)."""

from __future__ import annotations

import pytest

from mdlsae.cli import main
from mdlsae.studies.demo import TRUE_WIDTH, run_demo


@pytest.mark.slow
def test_run_demo_picks_the_true_width():
    lines: list[str] = []
    res = run_demo(n_train=15_000, n_eval=5_000, epochs=10, candidates=((96, 6), (128, 4), (256, 3)),
                   progress=False, out=lines.append)
    sel, by_dl, by_l0 = res["selection"], res["by_dl"], res["by_l0"]
    assert all(c.meets for c in sel.candidates)
    assert by_dl.report.d_sae == TRUE_WIDTH
    assert by_l0.report.d_sae >= TRUE_WIDTH  # L0 never prefers the narrower SAE here
    narrow = sel.candidates[0]
    assert narrow.report.l0 > by_dl.report.l0 and narrow.dl_bits_per_row > by_dl.dl_bits_per_row
    info = res["file"]
    assert info.n_rows == 5_000 and abs(info.overhead) < 0.003
    assert info.estimate_bits / info.n_rows == pytest.approx(by_dl.dl_bits_per_row, rel=1e-9)
    text = "\n".join(lines)
    assert "*topk D=128 k=4" in text and "the DL picks" in text and "payload" in text


def test_demo_cli_rejects_a_bad_tolerance(capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--tolerance", "0"])
    assert e.value.code == 2 and "--tolerance" in capsys.readouterr().err
