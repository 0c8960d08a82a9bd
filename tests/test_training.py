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
    return TrainConfig(**{"data": "ring", "parameterization": param, "steps": 40,
                          "batch_size": 256, "checkpoint_every": 20, **kw})


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


def test_a_finished_run_trains_longer_and_equals_a_fresh_longer_run(tmp_path):
    """``steps`` may grow on resume: 20 steps, then resumed to 40, equals 40 from scratch."""
    Trainer(small("energy", steps=20), tmp_path / "b").run()
    longer = Trainer(small("energy"), tmp_path / "b")
    assert longer.load() and longer.step == 20
    longer.run()
    fresh = Trainer(small("energy"), tmp_path / "a")
    fresh.run()
    for (k, va), vb in zip(fresh.ema.state_dict().items(), longer.ema.state_dict().values()):
        assert torch.equal(va, vb), k
    assert fresh.losses == longer.losses
    saved = read_model_file(tmp_path / "b" / "checkpoint" / "model.safetensors")[1]
    assert saved["train"]["steps"] == 40 and saved["step"] == 40
    with pytest.raises(CheckpointError, match="past the requested 30 steps"):
        Trainer(small("energy", steps=30), tmp_path / "b").load()


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
    with pytest.raises(ValueError, match="unknown pretrained model"):
        pretrained("nope")
    with pytest.raises(ValueError):
        pretrained("ring", "eps")


def test_dsm_loss_is_smallest_at_the_true_score():
    gmm = rc.GaussianMixture([[0.0, 0.5], [0.0, -0.5]], 0.1)

    class Eps(rc.models.parameterization.ScoreModel):
        def __init__(self, shift):
            super().__init__(torch.nn.Identity(), gmm.schedule, (2,))
            self.shift = shift

        def output(self, x, t, c=None):  # ε̂ = −σ_t s(x, t) (+ a perturbation)
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


def tiny(**kw):
    kw = {"steps": 7, "checkpoint_every": 5, **kw}
    return TrainConfig(data="ring", parameterization="score", batch_size=64, **kw)


def _checkpoint_step(folder):
    _, config = read_model_file(folder / "checkpoint" / "model.safetensors")
    state = json.loads((folder / "checkpoint" / "trainer.json").read_text())
    assert config["step"] == state["step"]
    return state["step"]


def test_the_last_step_is_always_checkpointed(tmp_path, monkeypatch):
    saved = []
    real = Trainer.save
    monkeypatch.setattr(Trainer, "save", lambda self: (saved.append(self.step), real(self)))
    trainer = Trainer(tiny(), tmp_path / "a")
    trainer.run()
    assert saved == [5, 7] and _checkpoint_step(tmp_path / "a") == 7
    saved.clear()
    Trainer(tiny(steps=10), tmp_path / "b").run(stop_at=3)  # interrupted before any interval
    assert saved == [3] and _checkpoint_step(tmp_path / "b") == 3


def test_resume_from_an_off_interval_step_is_bit_identical(tmp_path):
    full = Trainer(tiny(steps=12), tmp_path / "full")
    full.run()
    part = Trainer(tiny(steps=12), tmp_path / "part")
    part.run(stop_at=7)  # checkpoint at 7: not a multiple of checkpoint_every
    resumed = Trainer(tiny(steps=12), tmp_path / "part")
    assert resumed.load() and resumed.step == 7
    resumed.run()
    for a, b in ((full.model, resumed.model), (full.ema, resumed.ema)):
        for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(va, vb), k
    sa, sb = full.opt.state_dict(), resumed.opt.state_dict()
    for idx in sa["state"]:
        for k, v in sa["state"][idx].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(sb["state"][idx][k])), (idx, k)
    assert full.losses == resumed.losses
    assert torch.equal(full.gen.get_state(), resumed.gen.get_state())


def test_optimizer_state_is_a_weights_only_torch_file(tmp_path):
    trainer = Trainer(tiny(), tmp_path)
    trainer.run()
    state = torch.load(tmp_path / "checkpoint" / "optimizer.pt", weights_only=True)
    assert set(state) == {"state", "param_groups"} and len(state["state"]) > 0
    (tmp_path / "checkpoint" / "optimizer.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="cannot resume"):
        Trainer(tiny(), tmp_path).load()


def test_trainer_has_no_global_side_effects(tmp_path):
    torch.manual_seed(1)
    threads = torch.get_num_threads()
    rng = torch.random.get_rng_state()
    a = Trainer(tiny(threads=threads + 1), tmp_path / "a")
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert torch.get_num_threads() == threads
    a.run()
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert torch.get_num_threads() == threads
    torch.manual_seed(2)  # the global seed does not reach the weights
    b = Trainer(tiny(threads=threads + 1), tmp_path / "b")
    b.run()
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k


def test_q_sample_is_the_forward_marginal():
    from recompose.schedules import q_sample

    sched = rc.CosineSchedule()
    x0 = torch.randn(6, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(6, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    t = torch.linspace(0, 1, 6)
    alpha, sigma = sched(t)
    expected = alpha[:, None, None, None] * x0 + sigma[:, None, None, None] * noise
    assert torch.equal(q_sample(x0, t, sched, noise), expected)
    drawn = q_sample(x0, 0.3, sched, generator=torch.Generator().manual_seed(1))
    assert torch.equal(drawn, q_sample(x0, 0.3, sched, noise))
