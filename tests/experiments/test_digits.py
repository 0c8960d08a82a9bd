"""Digits guidance: shipped models load, guided composites sample, the evaluator's floor."""

import pytest
import torch

import recompose as rc
from experiments.common import sampler_args
from experiments.digits import Evaluator, evaluate, guided, labels_for, load_digits
from recompose.io import CheckpointError
from recompose.metrics import frechet_distance, mean_pairwise_distance
from recompose.models.loading import load_model, shipped_path


@pytest.fixture(scope="module")
def evaluator():
    return Evaluator()


def test_evaluator_accuracy_floor_on_held_out_digits(evaluator):
    # measured 0.97+ on the 500 held-out digits; binomial SE ≈ 0.008, the floor is far below
    assert evaluator.accuracy_on_held_out() >= 0.93


def test_real_digits_score_well_and_noise_scores_badly(evaluator):
    x, y = evaluator.x_test, evaluator.y_test
    real = evaluate(x, y, evaluator)
    noise = evaluate(torch.rand(500, 1, 8, 8, generator=torch.Generator().manual_seed(0))
                     * 2 - 1, y, evaluator)
    assert real["accuracy"] > 0.9 and noise["accuracy"] < 0.3
    assert real["fd"] < 1e-6  # the held-out set against itself
    assert noise["fd"] > 10 * evaluate(*_train_subset(), evaluator)["fd"]


def _train_subset():
    from recompose.data.digits import digits_split

    x, y = digits_split("train")
    return x[:500], y[:500]


@pytest.mark.parametrize("kind", ["classifier", "cfg"])
def test_guided_composites_sample_with_every_sampler(kind):
    models = load_digits()
    y = labels_for(4)
    model = guided(kind, 3.0, y, models)
    assert model.has_energy
    for sampler in ("reverse", "ula", "uhmc", "mala", "hmc"):
        r = rc.sample(model, 4, sampler, num_levels=4, seed=0,
                      num_steps=None if sampler == "reverse" else 1)
        assert r.x.shape == (4, 1, 8, 8) and bool(torch.isfinite(r.x).all())
    assert model.num_networks == 2


@pytest.mark.parametrize("models", ["distilled", "score"])
def test_other_model_sets_and_the_unguided_kind(models):
    """``models="distilled"`` guides with distilled energies (every sampler), ``"score"``
    with score networks (reverse, and MH from scores: ``hmc-path``); kind ``none`` is p(x)."""
    loaded = load_digits(models)
    y = labels_for(4)
    assert guided("none", 1.0, y, loaded) is loaded["uncond"]
    model = guided("cfg", 3.0, y, loaded)
    assert model.has_energy == (models == "distilled")
    for sampler in ("reverse", "hmc" if models == "distilled" else "hmc-path"):
        name, options = sampler_args(sampler)
        r = rc.sample(model, 4, name, num_levels=3, seed=0, **options,
                      num_steps=None if sampler == "reverse" else 1)
        assert bool(torch.isfinite(r.x).all())


def test_cfg_pulls_samples_toward_the_requested_digit(evaluator):
    # guidance works at all: CFG w=3 reverse diffusion hits the requested class far above
    # chance (0.1); 100 samples, SE ≤ 0.05
    models = load_digits()
    y = labels_for(100)
    r = rc.sample(guided("cfg", 3.0, y, models), 100, "reverse", num_levels=50, seed=0)
    assert evaluate(r.x, y, evaluator)["accuracy"] > 0.6


def test_classifier_files_are_not_diffusion_models():
    with pytest.raises(CheckpointError, match="classifier"):
        load_model(shipped_path("digits-noisy-clf"))
    with pytest.raises(CheckpointError, match="missing"):
        shipped_path("digits-nonexistent")


def test_frechet_distance_matches_the_gaussian_closed_form():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(20000, 3, generator=gen, dtype=torch.float64)
    b = torch.randn(20000, 3, generator=gen, dtype=torch.float64) * 2 + 1
    # N(0, I) vs N(1, 4I): ‖1‖² + tr(I + 4I − 2·2I) = 3 + 3
    assert abs(frechet_distance(a, b) - 6.0) < 0.15  # sampling error ≈ 0.05 at n = 20,000
    assert frechet_distance(a, a) < 1e-8
    assert mean_pairwise_distance(torch.tensor([[0.0, 0.0], [3.0, 4.0]])) == 5.0


@pytest.mark.parametrize("sampler", ["fkc", "smc"])
def test_particle_samplers_weigh_each_label_on_its_own(sampler):
    """The table's SMC / FKC cells pass one group per label: a label per chain means one
    target per label, and particles of different labels are never compared."""
    from experiments.digits import _run_cell

    cell = _run_cell({"kind": "cfg", "scale": 3.0, "sampler": sampler, "seed": 0, "n": 20,
                      "num_levels": 4, "num_steps": 1, "models": "score" if sampler == "fkc"
                      else "energy"})
    assert cell["x"].shape == (20, 1, 8, 8) and len(cell["info"]["log_evidence"]) == 10
