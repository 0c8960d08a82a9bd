"""The experiment scripts' shared plumbing: configs, overrides, output folders, tables."""

import json
from pathlib import Path

import pytest
import torch

import recompose
from experiments.common import CONFIG_DIR, load_config, markdown_table, parse_config
from recompose.io import run_folder


def test_every_config_is_valid_json_with_an_output_folder():
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
    assert names == ["analytic_product", "attributes", "clevr", "clevr_curves", "conservative",
                     "contrast_fit", "digits", "distillation", "equal_compute", "flow_backends",
                     "path_mh", "paths", "rewards_attributes", "rewards_clevr",
                     "rewards_oracle", "superdiff", "tapestry", "toy2d"]
    for name in names:
        assert "out" in load_config(name)


def test_options_override_the_checked_in_protocol(tmp_path):
    c = parse_config("toy2d", "", ["--n", "7", "--compositions", "product", "--out",
                                   str(tmp_path / "o")])
    assert c["n"] == 7 and c["compositions"] == ["product"]
    assert c["seeds"] == load_config("toy2d")["seeds"]


def test_an_earlier_run_is_never_overwritten_without_asking(tmp_path, capsys):
    out = tmp_path / "old"
    with run_folder(out) as tmp:
        (tmp / "table.md").write_text("results of an earlier run")
    with pytest.raises(SystemExit) as err:
        parse_config("clevr", "", ["--out", str(out)])
    assert err.value.code == 2 and "--overwrite" in capsys.readouterr().err
    assert (out / "table.md").read_text() == "results of an earlier run"
    assert parse_config("clevr", "", ["--out", str(out), "--overwrite"])["out"] == out


def test_markdown_table():
    assert markdown_table(["a", "b"], [[1, "x"], [2.5, "y"]]) == (
        "| a | b |\n|---|---|\n| 1 | x |\n| 2.5 | y |")


def test_analytic_product_writes_its_outputs(tmp_path):
    from experiments.analytic_product import main

    out = tmp_path / "ap"
    main(["--n", "50", "--seeds", "2", "--levels", "3", "--mcmc-steps", "1", "--out", str(out)])
    assert json.loads((out / "config.json").read_text())["n"] == 50
    assert (out / "table.md").read_text().startswith("| sampler |")


def test_paths_writes_its_table_at_equal_evaluations(tmp_path):
    """Every path and sampler (tiny n): equal composite score evaluations per chain, the
    exact mass the same on every path, evidence errors only for the weighted samplers."""
    from experiments.paths import main

    out = tmp_path / "paths"
    main(["--n", "40", "--seeds", "2", "--budget", "14", "--out", str(out)])
    rows = json.loads((out / "results.json").read_text())
    assert len(rows) == 18 and {r["score evals"] for r in rows} == {14}
    assert {r["exact mass x₁ < 0"] for r in rows} == {0.2028}
    weighted = [r for r in rows if r["sampler"].startswith(("smc", "fkc"))]
    assert all(r["log Ẑ − log Z"] != "–" for r in weighted) and len(weighted) == 6
    assert all(r["log Ẑ − log Z"] == "–" for r in rows if r not in weighted)


def test_superdiff_writes_its_oracle_tables(tmp_path):
    """The oracle parts at a tiny size: one estimator row per path and T (with the slopes on
    the last), mass rows for both models, AND rows for each κ range and the product."""
    from experiments.superdiff import main

    out = tmp_path / "sd"
    main(["--parts", "estimator", "mass", "and", "dimension", "--n", "40", "--estimator-n", "40",
          "--seeds", "2", "--estimator-levels", "4", "8", "--mass-levels", "4",
          "--and-levels", "4", "--dimension-n", "30", "--dimension-dims", "4",
          "--dimension-levels", "4", "--out", str(out)])
    rows = json.loads((out / "results.json").read_text())
    assert [r["T"] for r in rows["estimator"]] == [4, 8] * 3
    assert all("slope" in "".join(r) for r in rows["estimator"][1::2])
    assert len(rows["mass"]) == 4 and len(rows["and"]) == 8
    assert [(r["d"], r["weight of A"]) for r in rows["dimension"]] == [(4, 0.3), (4, 0.7)]
    assert (out / "table.md").read_text().startswith("### estimator")


def test_equal_compute_writes_its_outputs_and_scores_smc_evidence(tmp_path):
    """Every cell runs on the oracle task (tiny n); SMC rows carry the evidence error."""
    from experiments.equal_compute import cells, main

    out = tmp_path / "ec"
    main(["--tasks", "oracle", "--n", "20", "--seeds", "2", "--n-ref", "50", "--workers", "1",
          "--out", str(out)])
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    assert len(rows) == len(cells())
    for row in rows:
        assert ("log Z error" in row) == row["curve"].startswith(("smc", "fkc"))
        assert row["evals"][1] == 0.0  # the cost of a cell does not depend on the seed
    assert (out / "equal_compute.png").stat().st_size > 0


def test_equal_compute_cfg_oracle_scores_against_the_exact_guided_law(tmp_path):
    """The CFG oracle's grid law: draws match its quadrature mean; the cells report ED and the
    error of the mean."""
    from experiments.equal_compute import (
        CFG_GRID,
        _grid_draws,
        _grid_law,
        cfg_target_mean,
        main,
        oracle_cfg_problem,
    )

    draws = _grid_draws(_grid_law(oracle_cfg_problem(), 0.0, CFG_GRID), 4000, 0)
    mean, sd = float(draws[:, 0].mean()), float(draws[:, 0].std())
    assert abs(mean - cfg_target_mean()) < 4 * sd / 4000**0.5
    assert 1.1 < cfg_target_mean() < 1.3  # pushed right of p(x | y)'s mean 1 by p(x)^{-2}
    out = tmp_path / "ecc"
    main(["--tasks", "oracle_cfg", "--curves", "reverse", "fkc", "--n", "40", "--seeds", "1",
          "--n-ref", "50", "--workers", "1", "--out", str(out)])
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    assert len(rows) == 6 and all(r["mean error"][0] >= 0 and "ED×1e3" in r for r in rows)


def test_equal_compute_digits_tasks_score_guided_samples(tmp_path):
    """The digits tasks run their own cells (here only reverse diffusion, tiny n) and report
    the evaluator's accuracy and FD."""
    from experiments.equal_compute import main

    out = tmp_path / "ecd"
    main(["--tasks", "digits_cfg3", "--curves", "reverse", "--n-digits", "20", "--seeds", "1",
          "--workers", "1", "--out", str(out)])
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    assert [r["options"]["num_levels"] for r in rows] == [100, 300, 1000]
    assert all(0 <= r["accuracy"][0] <= 1 and r["FD"][0] > 0 for r in rows)


def test_path_mh_compares_both_rules_with_exact_energies(tmp_path):
    from experiments.path_mh import main

    out = tmp_path / "pm"
    main(["--n", "40", "--levels", "3", "--mcmc-steps", "2", "--kernels", "hmc",
          "--steps", "0.5", "--out", str(out)])
    rows = json.loads((out / "results.json").read_text())
    assert [r["quadrature"] for r in rows] == ["trapezoid", "simpson"]
    assert rows[1]["score_evals_path"] > rows[0]["score_evals_path"] == rows[0][
        "score_evals_exact"]


def test_distillation_report_covers_the_three_parameterisations(tmp_path):
    from experiments.distillation import main

    out = tmp_path / "dr"
    main(["--families", "ring", "--n", "64", "--out", str(out)])
    res = json.loads((out / "results.json").read_text())["ring"]
    assert set(res) == {"score", "energy", "distilled"}
    assert res["score"]["vs_teacher"][0] < 1e-10 < res["distilled"]["vs_teacher"][0]


def test_the_conservative_report_measures_the_teacher_and_its_energy_students(tmp_path):
    from experiments.conservative import main

    out = tmp_path / "cons"
    teacher_file = Path(recompose.__file__).parent / "pretrained" / "digits-cond-score.safetensors"
    main(["--families", "digits-cond", "--ts", "0.3", "--n", "24", "--probes", "1",
          "--other-teachers", f"digits-cond={teacher_file}", "--out", str(out)])
    row, other = json.loads((out / "results.json").read_text())
    # the same teacher named by its file: the same draws and probes give the same ρ
    assert other["rho_contrast"] == pytest.approx(row["rho"]["contrast"], rel=1e-6)
    assert set(row["rho"]) == {"null", "conditional", "contrast"}
    # the teacher's contrast is far less of a gradient than its views (cf. test_conservative)
    assert row["rho"]["contrast"][0] > 5 * row["rho"]["null"][0] > 0
    assert set(row["contrast_error"]) == {"energy", "distilled"}
    assert all(0 < e < 10 for e in row["contrast_error"].values())
    assert "ρ teacher: contrast" in (out / "table.md").read_text()


def test_the_contrast_fit_learns_a_known_gradient_field():
    from experiments.contrast_fit import BumpEnergy, fit

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        reference = BumpEnergy(8)
    gen = torch.Generator().manual_seed(0)

    def draws(n):
        x = torch.randn(n, 3, 16, 16, generator=gen)
        pos = 0.2 + 0.6 * torch.rand(n, 2, generator=gen)
        return x, pos, reference.gradient(x, pos)

    curve = fit(draws(256), draws(128), {"seed": 0, "width": 8, "lr": 3e-3, "steps": 100,
                                         "eval_every": 50, "batch_size": 32})
    assert [p["step"] for p in curve] == [0, 50, 100]
    # a field the model family holds exactly: the held-out error falls tenfold
    assert curve[-1]["test"] < 0.1 * curve[0]["test"]


def test_the_contrast_fit_reports_the_fit_beside_the_shipped_students(tmp_path):
    from experiments.contrast_fit import main

    out = tmp_path / "fit"
    main(["--steps", "4", "--eval-every", "2", "--n-train", "64", "--n-test", "64", "--width",
          "4", "--rho-n", "16", "--probes", "1", "--out", str(out)])
    res = json.loads((out / "results.json").read_text())
    assert [p["step"] for p in res["curve"]] == [0, 2, 4]
    # the distilled student matches the teacher's contrast far better than the from-scratch
    # energy model (0.27 against 0.63 on 128 draws)
    assert 0 < res["shipped"]["distilled"] < res["shipped"]["energy"]
    assert res["teacher_rho"][0] > 0
    assert "shipped clevr-distilled" in (out / "table.md").read_text()


def test_a_config_check_ends_the_script_with_its_message_before_any_work(tmp_path, capsys):
    def check(config):
        if config["n"] < 1:
            raise ValueError("n must be at least 1")

    with pytest.raises(SystemExit):
        parse_config("toy2d", "", ["--n", "0", "--out", str(tmp_path / "o")], check)
    assert "error: n must be at least 1" in capsys.readouterr().err
    assert parse_config("toy2d", "", ["--n", "3", "--out", str(tmp_path / "o")], check)["n"] == 3


@pytest.mark.parametrize("args, message", [
    (["--eval-every", "0"], "eval_every must be at least 1"),
    (["--rho-n", "128", "--n-test", "64"], "rho_n (128) draws come from the n_test (64)"),
    (["--t", "1.5"], "t must lie in (0, 1]"),
])
def test_the_contrast_fit_refuses_settings_it_cannot_run_with(tmp_path, capsys, args, message):
    from experiments.contrast_fit import main

    small = ["--steps", "2", "--n-train", "32", "--width", "4", "--probes", "1"]  # if it ran
    with pytest.raises(SystemExit):
        main([*small, *args, "--out", str(tmp_path / "fit")])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "fit").exists()


@pytest.mark.parametrize("args, message", [
    (["--other-teachers", "clevr"], "other_teachers entries are FAMILY=FILE, got 'clevr'"),
    (["--other-teachers", "clevr=missing.safetensors"], "'missing.safetensors': no such file"),
    (["--families", "ring"], "'ring' is not a conditional family"),
])
def test_the_conservative_report_refuses_bad_families_and_teachers(tmp_path, capsys, args,
                                                                    message):
    from experiments.conservative import main

    with pytest.raises(SystemExit):
        main([*args, "--out", str(tmp_path / "cons")])
    assert message in capsys.readouterr().err


def test_the_worker_pool_keeps_order_and_reports_a_task_error_or_a_dead_worker():
    import math
    import multiprocessing
    import os
    from multiprocessing.pool import RemoteTraceback

    from experiments.common import map_in_workers

    assert map_in_workers(math.sqrt, [16.0, 1.0, 9.0, 4.0], 2, "sqrt", False) == [4, 1, 3, 2]
    with pytest.raises(ValueError, match="math domain error") as err:
        map_in_workers(math.sqrt, [1.0, -1.0, 4.0], 2, "sqrt", False)
    assert isinstance(err.value.__cause__, RemoteTraceback)
    with pytest.raises(RuntimeError, match=r"a worker ended \(exit code 3\) during task 0"):
        map_in_workers(os._exit, [3], 1, "exit", False)  # a pool would wait for ever
    assert not multiprocessing.active_children()  # every worker is gone
