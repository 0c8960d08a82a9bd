"""Predictions (ε, x₀, v, flow-matching velocity, diffusers' flow ε − x₀, score) on every
path: the conversions against their definitions, round trips, score models that predict
them, and training with them."""

import math

import pytest
import torch

import recompose as rc
from recompose.models.parameterization import ScoreModel
from recompose.models.predictions import PREDICTIONS, get_prediction
from recompose.training.losses import dsm_loss

PATHS = {"cosine": rc.CosineSchedule(), "rectified flow": rc.RectifiedFlowSchedule(shift=2.0),
         "VE": rc.VESchedule(0.01, 20.0)}


def _draws(schedule, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(40, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(40, 3, generator=g, dtype=torch.float64)
    t = 0.02 + 0.95 * torch.rand(40, generator=g, dtype=torch.float64)
    alpha, sigma = schedule.alpha_sigma(t)
    return x0, eps, t, alpha[:, None] * x0 + sigma[:, None] * eps


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("name", list(PREDICTIONS))
def test_each_prediction_is_its_definition_and_converts_back_to_the_noise(path, name):
    schedule = PATHS[path]
    x0, eps, t, xt = _draws(schedule)
    alpha, sigma = (v[:, None] for v in schedule.alpha_sigma(t))
    da, ds = (v[:, None] for v in schedule.derivatives(t))
    definition = {"epsilon": eps, "x0": x0, "v": alpha * eps - sigma * x0,
                  "velocity": da * x0 + ds * eps, "score": -eps / sigma,
                  "flow": eps - x0}[name]
    pred = get_prediction(name)
    target = pred.target(x0, eps, t, schedule)
    torch.testing.assert_close(target, definition, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pred.to_epsilon(target, xt, t, schedule), eps, rtol=1e-9,
                               atol=1e-9)
    torch.testing.assert_close(pred.from_epsilon(eps, xt, t, schedule), definition, rtol=1e-9,
                               atol=1e-9)
    torch.testing.assert_close(pred.to_x0(target, xt, t, schedule), x0, rtol=1e-9, atol=1e-9)


def test_rectified_flow_velocity_reads_as_the_papers_formulas():
    """α = 1 − t, σ = t: ε̂ = x + (1 − t) u and x̂₀ = x − t u."""
    schedule = rc.RectifiedFlowSchedule()
    _, _, t, xt = _draws(schedule, seed=1)
    u = torch.randn(xt.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    eps = get_prediction("velocity").to_epsilon(u, xt, t, schedule)
    torch.testing.assert_close(eps, xt + (1 - t)[:, None] * u)
    x0 = (xt - t[:, None] * eps) / (1 - t)[:, None]
    torch.testing.assert_close(x0, xt - t[:, None] * u)


class _Oracle(torch.nn.Module):
    """A network that outputs a mixture oracle's exact ``prediction`` on its path."""

    def __init__(self, oracle, prediction):
        super().__init__()
        self.oracle, self.prediction = oracle, get_prediction(prediction)

    def forward(self, x, t):
        _, sigma = self.oracle.schedule(t)
        eps = -sigma[:, None] * self.oracle.score(x, t)
        return self.prediction.from_epsilon(eps, x, t, self.oracle.schedule)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("name", ["x0", "v", "velocity", "score"])
def test_a_score_model_of_any_prediction_has_the_oracles_score(path, name):
    schedule = PATHS[path]
    oracle = rc.GaussianMixture([[-1.0, 0.5], [0.8, -0.3]], 0.4, schedule=schedule)
    model = ScoreModel(_Oracle(oracle, name), schedule, (2,), prediction=name)
    x = torch.randn(30, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for t in (0.05, 0.5, 0.95):
        torch.testing.assert_close(model.score(x, t), oracle.score(x, t), rtol=1e-8, atol=1e-8)


def test_training_a_velocity_model_on_rectified_flow_learns_the_data(tmp_path):
    """A small flow-matching model (velocity prediction, rectified flow) trained on the bar:
    its DSM loss falls, its file round-trips with its path and prediction, and the ODE's and
    reverse diffusion's draws land in the bar (≥ 90 % within 0.05 of it)."""
    from recompose.config import TrainConfig
    from recompose.data import get_toy2d
    from recompose.models.loading import load_model
    from recompose.training.trainer import Trainer

    config = TrainConfig(data="bar", parameterization="score", prediction="velocity",
                         steps=1200, batch_size=512, seed=0, checkpoint_every=1200,
                         schedule={"name": "rectified_flow", "shift": 1.0, "t_max": 0.999},
                         network={"arch": "resmlp", "dim": 2, "width": 64, "num_blocks": 2,
                                  "emb_dim": 16, "widen": 1})
    trainer = Trainer(config, tmp_path)
    x0 = get_toy2d("bar").sample(4096, torch.Generator().manual_seed(5))

    def loss(model):
        return float(dsm_loss(model, x0, torch.Generator().manual_seed(6)).mean())

    before = loss(trainer.model)
    trainer.run()
    model = load_model(tmp_path / "checkpoint")
    assert model.prediction.name == "velocity" and model.schedule == config_schedule(config)
    assert loss(model) < 0.5 * before
    for sampler in ("ode", "reverse"):
        x = rc.sample(model, 2000, sampler, num_levels=100, seed=0).x
        inside = (x[:, 0].abs() < 0.25) & (x[:, 1].abs() < 1.05)
        assert float(inside.double().mean()) >= 0.9, sampler


def config_schedule(config):
    return rc.get_schedule(config.schedule)


def test_the_loss_targets_the_models_prediction():
    """For a network that outputs the exact target, the DSM loss is 0 (up to rounding), for
    every prediction; for ε-prediction the target is the drawn noise itself."""
    schedule = rc.RectifiedFlowSchedule()
    oracle = rc.GaussianMixture([[0.0, 0.0]], 1e-3, schedule=schedule)  # ~ a point mass

    class Exact(torch.nn.Module):
        def __init__(self, prediction):
            super().__init__()
            self.prediction = get_prediction(prediction)

        def forward(self, x, t):  # x0 = 0: the target is C_t ε with ε = x/σ
            _, sigma = schedule(t)
            return self.prediction.from_epsilon(x / sigma[:, None], x, t, schedule)

    x0 = torch.zeros(256, 2, dtype=torch.float64)
    for name in ("epsilon", "velocity", "v", "x0"):
        model = ScoreModel(Exact(name), schedule, (2,), prediction=name)
        loss = dsm_loss(model, x0, torch.Generator().manual_seed(0))
        assert float(loss.max()) < 1e-12, name
    assert oracle is not None and math.isfinite(float(loss.mean()))
