"""Opt-in (``python -m pytest -m slow``): the paper's 2D claim on the shipped models."""

import pytest


@pytest.mark.slow
def test_mcmc_beats_reverse_diffusion_on_the_learned_product(tmp_path):
    from experiments.toy2d import run

    res = run(tmp_path / "toy2d", n=500, seeds=(0, 1), compositions=("product",),
              progress=False)
    rows = {(r["parameterization"], r["sampler"]): r for r in res["rows"]}
    reverse, hmc = rows[("energy", "reverse")], rows[("energy", "hmc")]
    assert hmc["LL"][0] > reverse["LL"][0] + 1.0
    assert hmc["support"][0] > reverse["support"][0] + 0.1
