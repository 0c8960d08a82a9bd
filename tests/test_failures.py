"""Failures are reported as failures, with advice that matches the cause."""

import pytest
from click.testing import CliRunner

import recompose as rc
from recompose.cli.main import cli
from recompose.samplers import SamplingWarning


def test_a_diverging_training_stops_with_exit_1(tmp_path):
    r = CliRunner().invoke(cli, ["--quiet", "train", "--data", "ring", "--lr", "1e6",
                                 "--steps", "50", "--out", str(tmp_path / "t")])
    assert r.exit_code == 1, r.output
    assert "training diverged" in r.output and "learning rate (1e+06)" in r.output


def test_a_healthy_training_does_not_trip_the_divergence_check(tmp_path):
    r = CliRunner().invoke(cli, ["--quiet", "train", "--data", "ring", "--steps", "30",
                                 "--batch-size", "64", "--out", str(tmp_path / "t")])
    assert r.exit_code == 0, r.output


def test_zero_acceptance_and_divergences_warn_and_are_recorded():
    model = rc.GaussianMixture([[0.0, 0.0]], 0.1)
    with pytest.warns(SamplingWarning) as caught:
        r = rc.sample(model, 32, "hmc", num_levels=4, num_steps=2, step_size=1e3,
                      step_power=0, adapt=False, seed=0)
    messages = [str(w.message) for w in caught]
    assert any("mean acceptance 0.000 is under 0.05" in m for m in messages)
    assert any("divergent transitions at 4 of 4 levels" in m for m in messages)
    assert r.info.to_dict()["warnings"] == messages


def test_a_healthy_run_does_not_warn(recwarn):
    model = rc.GaussianMixture([[0.0, 0.0]], 0.3)
    r = rc.sample(model, 64, "hmc", num_levels=10, num_steps=2, seed=0)
    assert r.info.warnings == [] and not recwarn.list


def test_the_cli_prints_sampling_warnings_and_records_them(tmp_path):
    import json

    out = tmp_path / "o"
    r = CliRunner().invoke(cli, ["--quiet", "sample", "--model", "A=ring", "--expr", "A",
                                 "--sampler", "hmc", "--levels", "3", "--mcmc-steps", "2",
                                 "--n", "16", "--step-size", "1000", "--no-adapt", "--out",
                                 str(out)])
    assert r.exit_code == 0
    assert "warning: hmc: mean acceptance" in r.output
    assert json.loads((out / "metrics.json").read_text())["sampling"]["warnings"]


@pytest.mark.parametrize("sampler", ["reverse", "ula", "hmc"])
def test_non_finite_model_outputs_are_not_blamed_on_the_step_size(sampler):
    model = rc.GaussianMixture([[0.0, 0.0]], 0.1) ** 1e308  # energies overflow to ±inf
    with pytest.raises(FloatingPointError, match="the model itself gives non-finite") as err:
        rc.sample(model, 8, sampler, num_levels=3, seed=0)
    assert "step size will not help" in str(err.value)


def test_a_too_large_step_is_blamed_on_the_step_size():
    model = rc.GaussianMixture([[0.0, 0.0]], 0.1)
    with pytest.raises(FloatingPointError, match="use a smaller step size"):
        rc.sample(model, 8, "ula", num_levels=3, num_steps=20, step_size=1e40, step_power=0,
                  seed=0)


@pytest.mark.parametrize("args,message", [
    (["--n", "100000000000"], "Invalid value for '--n' / '--num-samples': 100000000000 is not "
                              "in the range 1<=x<=1000000."),
    (["--step-size", "inf"], "step size must be a positive finite number, got inf"),
    (["--step-power", "nan"], "step power must be a finite number, got nan"),
])
def test_invalid_values_are_usage_errors_in_one_line(tmp_path, args, message):
    r = CliRunner().invoke(cli, ["sample", "--model", "A=ring", "--expr", "A", "--sampler",
                                 "hmc", *args, "--out", str(tmp_path / "o")])
    assert r.exit_code == 2, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert errors == [f"Error: {message}"] and "Traceback" not in r.output


def test_final_samples_far_outside_the_models_range_are_counted_exactly():
    """``sample_problems``: the counts, the largest magnitude and the limit (100 prior
    standard deviations, at least 100) in the message; every chain unusable is a failure."""
    import torch

    from recompose.samplers.result import sample_problems

    x = torch.zeros(10, 1, 2, 2)
    assert sample_problems(x, 1.0) == []
    x[3, 0, 1, 1], x[7, 0, 0, 0] = 150.0, -99.0  # one beyond 100, one inside
    x[5, 0, 0, 1] = float("nan")
    (message,) = sample_problems(x, 1.0)
    assert message.startswith("1 of 10 samples are not finite and 1 of 10 samples lie far "
                              "outside the range of the model's noise and data (|x| up to "
                              "150, beyond 100)")
    assert "far outside" not in sample_problems(x, 2.0)[0]  # the limit scales with the noise
    x[3, 0, 1, 1] = 250.0
    assert "(|x| up to 250, beyond 200)" in sample_problems(x, 2.0)[0]
    assert sample_problems(torch.full((10, 2), 1e3), 20.0) == []  # within 100 × 20
    with pytest.raises(FloatingPointError, match="^no usable sample: 10 of 10 samples lie far"):
        sample_problems(torch.full((10, 2), 1e9), 1.0)  # every chain beyond 10⁶
    assert len(sample_problems(torch.full((10, 2), 1e5), 1.0)) == 1  # suspect, not exploded


def test_a_flat_composition_warns_and_the_cli_records_it(tmp_path):
    """``A**0`` is a flat (improper) density: reverse diffusion wanders to |x| ~ 10³. The run
    finishes with a warning (Python) and the warning in metrics.json (command line)."""
    import json

    with pytest.warns(SamplingWarning, match="far outside the range"):
        r = rc.sample(rc.compose.power(rc.pretrained("ring"), 0.0), 200, "reverse",
                      num_levels=50, seed=0)
    assert any("degenerate" in w for w in r.info.warnings)
    out = tmp_path / "flat"
    cli_run = CliRunner().invoke(cli, ["--quiet", "sample", "--model", "A=ring", "--expr",
                                       "A**0", "--sampler", "reverse", "--levels", "50",
                                       "--n", "200", "--out", str(out)])
    assert cli_run.exit_code == 0, cli_run.output
    assert "warning: " in cli_run.output and "far outside" in cli_run.output
    recorded = json.loads((out / "metrics.json").read_text())["sampling"]["warnings"]
    assert any("far outside" in w for w in recorded)


def test_a_run_with_no_usable_sample_fails_in_one_line(tmp_path):
    """Every chain far outside: a runtime failure (exit 1) naming what to change, no files."""
    class Runaway(rc.DiffusionModel):  # a score that pushes every chain outwards
        has_energy = False

        def __init__(self):
            super().__init__()
            self.schedule, self.event_shape, self.name = rc.CosineSchedule(), (2,), "runaway"

        def score(self, x, t):
            return 1e9 * x.sign()

    with pytest.raises(FloatingPointError, match="^no usable sample: "):
        rc.sample(Runaway(), 20, "reverse", num_levels=10, seed=0)
