"""Failures are reported as failures, with advice that matches the cause."""

import pytest
from click.testing import CliRunner

import recompose as rc
from recompose.cli.main import cli
from recompose.diffusion.annealed import SamplingWarning


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
