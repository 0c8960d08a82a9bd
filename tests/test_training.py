"""Training, checkpoints and the shipped models."""

import json

import pytest
import torch

import recompose as rc
from recompose.config import TrainConfig
from recompose.data import TOY2D, get_toy2d
from recompose.io import CheckpointError, read_model_file, save_model_file
from recompose.models.loading import PRETRAINED, load_model, pretrained
from recompose.models.normalization import normalize_by_quadrature
from recompose.training.losses import dsm_loss
from recompose.training.trainer import Trainer


def small(param, **kw):
    return TrainConfig(data="ring", parameterization=param, steps=40, batch_size=256,
                       checkpoint_every=20, **kw)


def heldout_loss(model):
    gen = torch.Generator().manual_seed(123)
    x0 = get_toy2d("ring").sample(4096, gen)
    return dsm_loss(model, x0, gen).mean().item()


@pytest.mark.parametrize("param", ["score", "energy"])
def test_a_few_steps_reduce_the_loss(tmp_path, param):
    trainer = Trainer(small(param), tmp_path)
    before = heldout_loss(trainer.model)
    trainer.run()
    after = heldout_loss(trainer.model)
    assert after < 0.8 * before, (before, after)


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    a = Trainer(small("energy"), tmp_path / "a")
    a.run()
    b = Trainer(small("energy"), tmp_path / "b")
    b.run(stop_at=20)  # "interrupted" after the checkpoint at step 20
    c = Trainer(small("energy"), tmp_path / "b")
    assert c.load() and c.step == 20
    c.run()
    for (k, va), vc in zip(a.ema.state_dict().items(), c.ema.state_dict().values()):
        assert torch.equal(va, vc), k
    assert a.losses == c.losses


def test_resume_refuses_different_settings(tmp_path):
    Trainer(small("energy"), tmp_path).run(stop_at=20)
    other = Trainer(small("energy", lr=5e-4), tmp_path)
    with pytest.raises(CheckpointError, match="different settings"):
        other.load()


def test_checkpoint_round_trip(tmp_path):
    trainer = Trainer(small("energy"), tmp_path)
    trainer.run()
    model = load_model(tmp_path / "checkpoint")
    x = torch.randn(8, 2)
    torch.testing.assert_close(model.energy(x, 0.3), trainer.ema.energy(x, 0.3))
    assert json.loads((tmp_path / "config.json").read_text())["steps"] == 40
    assert not list(tmp_path.glob(".checkpoint*"))  # no temporary leftovers


def test_bad_checkpoints_are_refused_in_one_line(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="cannot read checkpoint") as err:
        load_model(bad)
    assert "\n" not in str(err.value)
    truncated = tmp_path / "trunc.safetensors"
    data = (rc.__path__[0] + "/pretrained/ring-energy.safetensors")
    truncated.write_bytes(open(data, "rb").read()[:5000])
    with pytest.raises(CheckpointError):
        load_model(truncated)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_model(tmp_path / "missing.safetensors")
    tensors, config = read_model_file(data)
    config["network"]["num_blocks"] = 5
    save_model_file(tmp_path / "mismatch.safetensors", tensors, config)
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(tmp_path / "mismatch.safetensors")


@pytest.mark.parametrize("name", PRETRAINED)
def test_shipped_models_load_and_fit_their_data(name):
    data = get_toy2d(name)
    x = data.sample(2000, torch.Generator().manual_seed(0))
    for param in ("score", "energy"):
        model = pretrained(name, param)
        assert model.has_energy == (param == "energy")
        # the trained denoiser beats the trivial predictor ε̂ = 0 (loss 1) by a wide margin
        gen = torch.Generator().manual_seed(1)
        assert dsm_loss(model, x, gen).mean().item() < 0.5


def test_pretrained_errors():
    with pytest.raises(KeyError, match="unknown pretrained model"):
        pretrained("nope")
    with pytest.raises(ValueError):
        pretrained("ring", "eps")


def test_dsm_loss_is_smallest_at_the_true_score():
    gmm = rc.GaussianMixture([[0.0, 0.5], [0.0, -0.5]], 0.1)

    class Eps(rc.models.parameterization.ScoreModel):
        def __init__(self, shift):
            super().__init__(torch.nn.Identity(), gmm.schedule, (2,))
            self.shift = shift

        def epsilon(self, x, t):  # ε̂ = −σ_t s(x, t) (+ a perturbation)
            _, sigma = gmm.schedule(t)
            return -sigma[:, None] * gmm.score(x, t) + self.shift

    x0 = gmm.sample(20000, torch.Generator().manual_seed(0)).float()
    losses = [float(dsm_loss(Eps(s), x0, torch.Generator().manual_seed(1)).mean())
              for s in (0.0, 0.1)]
    assert losses[0] < losses[1]


def test_quadrature_normalisation_is_exact_on_an_analytic_model():
    gmm = rc.GaussianMixture([[0.3, 0.1], [-0.4, 0.2]], [0.1, 0.3])
    norm = normalize_by_quadrature(gmm, num_times=11)
    assert float(norm.log_z.abs().max()) < 1e-4  # the oracle's energy is already normalised


def test_mixture_of_normalised_learned_models_integrates_to_one():
    parts = [normalize_by_quadrature(pretrained(n, "energy"), num_times=21, grid=64)
             for n in ("left_bar", "right_bar")]
    mix = rc.mixture(parts, [0.3, 0.7])
    from recompose.models.normalization import log_normalizer_2d

    for t in (0.05, 0.5):
        assert abs(log_normalizer_2d(mix, t)) < 0.02


def test_toy_data_is_seeded_and_in_support():
    for name, data in TOY2D.items():
        a = data.sample(500, torch.Generator().manual_seed(0))
        b = data.sample(500, torch.Generator().manual_seed(0))
        assert torch.equal(a, b) and a.shape == (500, 2)
        if name != "ring":
            assert bool(data.in_support(a).all())
    assert bool(torch.isinf(get_toy2d("bar").log_prob(torch.tensor([[0.5, 0.0]]))).all())
