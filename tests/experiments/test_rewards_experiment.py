"""The §16 experiment's pieces (experiments/rewards.py): method names, the pixel detector and
the count reward, the checker-presence reward."""

import pytest
import torch

pytest.importorskip("diffusers", reason="the diffusers extra is part of [test]")

from experiments import rewards as R  # noqa: E402
from recompose.data.clevr import SceneSpec, make_scenes  # noqa: E402


def test_method_names():
    assert R.method("reverse") == ("reverse", 1, None)
    assert R.method("guided") == ("guided", 1, None)
    assert R.method("best-of-8") == ("best-of", 8, None)
    assert R.method("fkc-4") == ("fkc", 4, None)
    assert R.method("fkc+reward-4") == ("fkc+reward", 4, "difference")
    assert R.method("fkc+reward:max-2") == ("fkc+reward", 2, "max")
    for bad in ("fkc", "best-of-0", "smc-4"):
        with pytest.raises(ValueError):
            R.method(bad)


def test_pixel_detector_counts_real_scenes():
    """Every object of a real scene found, nothing else, in ≥ 99 % of held-out scenes; a
    missing or an extra requested position costs exactly one."""
    assert R.detector_accuracy(200, seed=5)["exact_count"] >= 0.99
    scenes = make_scenes(50, torch.Generator().manual_seed(6), SceneSpec(), num_objects=2)
    x, pos = scenes["x"], scenes["pos"][:, :2]
    exact = R.count_errors(x, pos) == 0
    assert exact.float().mean() >= 0.96
    ok = exact.nonzero().flatten()[:10]
    assert torch.equal(R.count_errors(x[ok], pos[ok, :1]), torch.ones(len(ok),
                                                                      dtype=torch.float64))
    far = torch.full((len(ok), 1, 2), -5.0)  # a requested position off the image
    assert torch.equal(R.count_errors(x[ok], torch.cat([pos[ok], far], 1)),
                       torch.ones(len(ok), dtype=torch.float64))
    assert torch.equal(R.count_reward(pos[ok])(x[ok]), torch.zeros(len(ok),
                                                                   dtype=torch.float64))


def test_presence_reward_is_the_checkers_log_probability():
    from experiments import attributes as A

    checker = A.load_checker("reward")
    d = A.attribute_scenes(20, torch.Generator().manual_seed(3))
    r = R.presence_reward(checker, [(A.RED, A.CUBE), (A.BLUE, A.SPHERE)])(d["x"])
    logits = checker(d["x"])
    want = (torch.nn.functional.logsigmoid(logits[:, A.RED, A.CUBE])
            + torch.nn.functional.logsigmoid(logits[:, A.BLUE, A.SPHERE])).double()
    assert r.shape == (20,) and torch.allclose(r, want)


def test_clevr_script_writes_its_table_at_equal_evaluations(tmp_path):
    """A tiny run end to end: outputs written, costs per image counted over the population."""
    import json

    out = tmp_path / "run"
    R.main(["clevr", "--n", "2", "--seeds", "0", "--ks", "2", "--levels", "4", "--methods",
            "reverse", "best-of-2", "fkc+reward-2", "--figure-k", "2", "--out", str(out)])
    cells = json.loads((out / "results.json").read_text())["cells"]
    cost = {c["method"]: (c["network_evals"], c["reward_evals"]) for c in cells}
    assert cost == {"reverse": (12, 0), "best-of-2": (24, 2), "fkc+reward-2": (24, 8)}
    assert (out / "table.md").is_file() and (out / "figures" / "clevr.png").is_file()
