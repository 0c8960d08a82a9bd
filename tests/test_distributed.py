"""Sharded sampling on a gloo process group of 1, 2 and 3 CPU processes (loopback only, bounded
time): the union of the samples is the same bytes for every world size."""

import json
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import recompose as rc

TIMEOUT = 240  # seconds for one group to start, sample and stop


def spawn(fn, world, args):
    """``fn(rank, world, *args)`` in ``world`` spawned processes; fails the test (and stops
    them) if they do not finish within ``TIMEOUT``."""
    ctx = mp.start_processes(fn, args=(world, *args), nprocs=world, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + TIMEOUT
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.terminate()
            pytest.fail(f"{fn.__name__} in a group of {world} did not finish in {TIMEOUT} s")


class Jitter(rc.samplers.Sampler):
    """A sampler written here, not in the library: Gaussian steps of size ``scale·σ_t`` from the
    prior, one score evaluation per level (to count), no use of the score."""

    name = "jitter"

    def __init__(self, scale=0.1):
        self.scale = scale

    def settings(self):
        return {"scale": self.scale}

    def start(self, run):
        return run.x_init

    def positions(self, x):
        return x

    def level(self, run, x, i):
        z = torch.randn(x.shape, generator=run.generator, dtype=x.dtype)
        x = x + self.scale * float(run.levels.sigma[i]) * z
        run.model.score(x, run.t(i))
        run.count(score=1)
        return x, rc.samplers.LevelRecord()

    def finish(self, run, x):
        return rc.samplers.Finished(x)


def _labels(n):
    return torch.arange(n) % 3


def _worker(rank, world, init_file, out_dir, n, block_size, sampler):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        model = rc.pretrained("ring") * rc.pretrained("bar")
        r = rc.sample(model, n, rc.distributed.Sharded(sampler, block_size=block_size),
                      num_levels=8, num_steps=2, seed=3)
        torch.save(r.x, f"{out_dir}/x{rank}.pt")
        checks = {"n": r.info.num_chains, "world": r.info.settings["world_size"],
                  "blocks": r.info.settings["blocks"]}
        # SMC: one population, network evaluations split across the ranks
        smc = rc.sample(model, 203, "smc", num_levels=8, seed=4)
        alone = rc.sample(model, 203, "smc", num_levels=8, seed=4, shard=False)  # this rank
        # FKC on a model with a label per chain: groups= in a group as in one process
        digits = rc.pretrained("digits-cond", "score")
        y = _labels(30)
        cfg = rc.cfg(digits.given(y), digits, 2.0)
        fkc = rc.sample(cfg, 30, "fkc", num_levels=6, seed=5, groups=y)
        # FKC on a model without per-chain conditions: its rows split over the ranks
        fkc_rows = rc.sample(model, 203, "fkc", num_levels=8, seed=7)
        fkc_rows_alone = rc.sample(model, 203, "fkc", num_levels=8, seed=7, shard=False)
        # a reward factor: read on rows split over the ranks; best-of-N on chain blocks
        near = rc.reward(lambda x: -(x[:, 0] - 0.3).abs(), temperature=0.2)
        fkc_reward = rc.sample(model * near, 203, "fkc", num_levels=8, seed=8)
        fkc_reward_alone = rc.sample(model * near, 203, "fkc", num_levels=8, seed=8,
                                     shard=False)
        best = rc.sample(model * near, 50, rc.samplers.BestOf("reverse", 3), num_levels=4,
                         seed=9)
        # a sampler object defined in this file
        jitter = rc.sample(model, 100, Jitter(), num_levels=5, seed=6)
        torch.save({"x": smc.x, "alone": alone.x, "logz": smc.info.log_evidence,
                    "logz_alone": alone.info.log_evidence, "resampled": smc.info.resampled,
                    "resampled_alone": alone.info.resampled, "fkc": fkc.x,
                    "fkc_logz": fkc.info.log_evidence, "fkc_resampled": fkc.info.resampled,
                    "jitter": jitter.x, "jitter_evals": jitter.info.score_evals,
                    "fkc_rows": fkc_rows.x, "fkc_rows_alone": fkc_rows_alone.x,
                    "fkc_rows_split": fkc_rows.info.settings["rows_split"],
                    "fkc_reward": fkc_reward.x, "fkc_reward_alone": fkc_reward_alone.x,
                    "fkc_reward_logz": fkc_reward.info.log_evidence,
                    "fkc_reward_logz_alone": fkc_reward_alone.info.log_evidence,
                    "reward_evals": fkc_reward.info.reward_evals, "best": best.x},
                   f"{out_dir}/smc{rank}.pt")
        for name, call in [("generator", lambda: rc.sample(model, 4, "ula", num_levels=2,
                                                           generator=torch.Generator())),
                           ("both", lambda: rc.sample(model, 4, "ula", num_levels=2, seed=1,
                                                      generator=torch.Generator())),
                           ("smc", lambda: rc.sample(model, 4, "smc", num_levels=2)),
                           ("groups", lambda: rc.sample(model, 4, "reverse", num_levels=2,
                                                        seed=1, groups=_labels(4)))]:
            try:
                call()
                checks[name] = "no error"
            except (ValueError, TypeError) as err:
                checks[name] = str(err)
        with open(f"{out_dir}/checks{rank}.json", "w") as f:
            json.dump(checks, f)
    finally:
        dist.destroy_process_group()


def run_group(world, tmp_path, n=300, block_size=64, sampler="hmc"):
    out = tmp_path / f"p{world}"
    out.mkdir()
    spawn(_worker, world, (str(tmp_path / f"init{world}"), str(out), n, block_size, sampler))
    xs = [torch.load(out / f"x{r}.pt") for r in range(world)]
    checks = [json.loads((out / f"checks{r}.json").read_text()) for r in range(world)]
    return xs, checks


def test_sharded_samples_are_identical_for_any_world_size(tmp_path):
    (x1,), _ = run_group(1, tmp_path)
    x2, checks2 = run_group(2, tmp_path)
    x3, checks3 = run_group(3, tmp_path)
    assert x1.shape == (300, 2)
    for x in x2 + x3:  # every rank holds the whole, identical result
        assert torch.equal(x, x1)
    assert all(c["n"] == 300 and c["blocks"] == 5 for c in checks2 + checks3)
    assert [c["world"] for c in checks3] == [3, 3, 3]
    assert "needs seed=" in checks2[1]["generator"]
    assert "no generator=" in checks2[1]["both"]  # never silently ignored
    assert "needs seed=" in checks2[0]["smc"]
    # groups= does not apply to reverse diffusion, in a group as outside one
    assert checks2[0]["groups"].startswith("groups does not apply to sampler 'reverse'")
    # the blocks are independent runs: a different block size is a different (valid) run
    assert not torch.equal(x1[:64], x1[64:128])


def test_distributed_smc_equals_one_process(tmp_path):
    """Replicated weights and resampling, network rows split over 2 ranks: the same particles,
    evidence and resampling levels as the same run in one process."""
    run_group(2, tmp_path, n=64)
    runs = [torch.load(tmp_path / "p2" / f"smc{r}.pt") for r in range(2)]
    for run in runs:
        assert run["x"].shape == (203, 2)
        assert run["resampled"] == run["resampled_alone"] and run["resampled"]
        torch.testing.assert_close(run["x"], run["alone"], rtol=1e-5, atol=1e-5)
        assert abs(run["logz"] - run["logz_alone"]) < 1e-5
    assert torch.equal(runs[0]["x"], runs[1]["x"])
    assert torch.equal(runs[0]["fkc"], runs[1]["fkc"])
    for run in runs:  # FKC's weights from rows evaluated on two ranks
        assert run["fkc_rows_split"]
        torch.testing.assert_close(run["fkc_rows"], run["fkc_rows_alone"], rtol=1e-5,
                                   atol=1e-5)
        # with a reward factor read on each rank's rows: the same run as in one process
        torch.testing.assert_close(run["fkc_reward"], run["fkc_reward_alone"], rtol=1e-5,
                                   atol=1e-5)
        assert abs(run["fkc_reward_logz"] - run["fkc_reward_logz_alone"]) < 1e-5
        assert run["reward_evals"] == 8
    assert torch.equal(runs[0]["best"], runs[1]["best"]) and runs[0]["best"].shape == (50, 2)


def test_block_scheme_deals_contiguous_blocks():
    from recompose.distributed import block_seed, blocks_of, default_block_size

    assert [default_block_size(s) for s in [(2,), (64,), (3, 16, 16), (4, 64, 64)]] == \
        [1024, 1024, 64, 16]

    assert blocks_of(300, 64, 3, 0) == [(0, 0, 64)]
    assert blocks_of(300, 64, 3, 2) == [(3, 192, 256), (4, 256, 300)]
    covered = [c for r in range(4) for b in blocks_of(1000, 100, 4, r) for c in range(b[1], b[2])]
    assert covered == list(range(1000))
    assert block_seed(3, 0) != block_seed(3, 1) != block_seed(4, 0)
    assert block_seed(3, 1) == block_seed(3, 1)
    # exactly numpy's seed mixing of (seed, block), in that order, as 63 bits
    import numpy as np

    for seed, block in [(3, 1), (0, 7), (12345, 0)]:
        state = np.random.SeedSequence([seed, block]).generate_state(1, np.uint64)[0]
        assert block_seed(seed, block) == int(state) & ((1 << 63) - 1)
    assert block_seed(3, 1) != block_seed(1, 3)


def test_sharded_runs_outside_a_group_are_the_groups_samples(tmp_path):
    """``shard=True`` in one process gives the samples of a process group of 2, for a library
    sampler and for one written in a test file; FKC with ``groups=`` in a group equals the same
    run in one process (its network rows split, its weights per group)."""
    model = rc.pretrained("ring") * rc.pretrained("bar")
    torch.set_num_threads(1)
    x2, _ = run_group(2, tmp_path)
    one = rc.sample(model, 300, rc.distributed.Sharded("hmc", block_size=64), num_levels=8,
                    num_steps=2, seed=3, shard=True)
    assert torch.equal(one.x, x2[0])
    grouped = torch.load(tmp_path / "p2" / "smc0.pt")
    jitter = rc.sample(model, 100, Jitter(), num_levels=5, seed=6, shard=True)
    assert torch.equal(jitter.x, grouped["jitter"]) and grouped["jitter_evals"] == 5
    assert not torch.equal(jitter.x, rc.sample(model, 100, Jitter(), num_levels=5, seed=6).x)
    digits = rc.pretrained("digits-cond", "score")
    y = _labels(30)
    fkc = rc.sample(rc.cfg(digits.given(y), digits, 2.0), 30, "fkc", num_levels=6, seed=5,
                    groups=y)
    torch.testing.assert_close(fkc.x, grouped["fkc"], rtol=1e-4, atol=1e-4)
    assert fkc.info.resampled == grouped["fkc_resampled"] and len(fkc.info.log_evidence) == 3
    assert fkc.info.log_evidence == pytest.approx(grouped["fkc_logz"], abs=1e-4)


def test_sharding_options_are_checked():
    model = rc.pretrained("ring")
    with pytest.raises(TypeError, match="block_size applies only to sharded runs"):
        rc.sample(model, 4, rc.distributed.Sharded("ula", block_size=2), num_levels=2, seed=0)
    with pytest.raises(ValueError, match="needs seed="):
        rc.sample(model, 4, "ula", num_levels=2, shard=True)
    with pytest.raises(TypeError, match="block_size does not apply to smc"):
        rc.sample(model, 4, rc.distributed.Sharded("smc", block_size=2), num_levels=2, seed=0,
                  shard=True)
    with pytest.raises(ValueError, match="block_size must be"):
        rc.distributed.Sharded("ula", block_size=0)


# --------------------------------------------------------------------- data-parallel training
def _train_config(**kw):
    from recompose.config import TrainConfig

    return TrainConfig(data="ring", parameterization="energy", steps=12, batch_size=64,
                       checkpoint_every=6, threads=1, **kw)


def _train_worker(rank, world, init_file, out, stop_at):
    from recompose.training.trainer import Trainer

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        trainer = Trainer(_train_config(), out)
        trainer.load()
        trainer.run(stop_at=stop_at)
    finally:
        dist.destroy_process_group()


def _spawn_training(world, tmp_path, out, stop_at, tag):
    spawn(_train_worker, world, (str(tmp_path / f"init-{tag}"), str(out), stop_at))


def _losses(out):
    return json.loads((out / "checkpoint" / "trainer.json").read_text())["losses"]


def test_data_parallel_training_matches_one_process_and_resumes_under_another_size(tmp_path):
    from recompose.models.loading import load_model
    from recompose.training.trainer import Trainer

    single = Trainer(_train_config(), tmp_path / "single")
    single.run()
    _spawn_training(2, tmp_path, tmp_path / "ddp", None, "a")
    ref, ddp = torch.tensor(single.losses), torch.tensor(_losses(tmp_path / "ddp"))
    assert len(ddp) == 12
    torch.testing.assert_close(ddp, ref, rtol=1e-4, atol=1e-6)  # reduction order only
    w_ref = single.ema.state_dict()
    w_ddp = load_model(tmp_path / "ddp" / "checkpoint" / "model.safetensors").state_dict()
    for k in w_ref:
        torch.testing.assert_close(w_ddp[k], w_ref[k], rtol=1e-4, atol=1e-5)
    # 6 steps on 2 processes, then resumed in one process to step 12
    _spawn_training(2, tmp_path, tmp_path / "mixed", 6, "b")
    resumed = Trainer(_train_config(), tmp_path / "mixed")
    assert resumed.load() and resumed.step == 6
    resumed.run()
    torch.testing.assert_close(torch.tensor(resumed.losses), ref, rtol=1e-4, atol=1e-6)


def test_each_rank_takes_its_rows_and_the_batch_must_split_evenly(tmp_path, monkeypatch):
    from recompose import distributed
    from recompose.training.trainer import Trainer

    trainer = Trainer(_train_config(), tmp_path)
    assert trainer._rows(64) == slice(0, 64)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    assert trainer._rows(64) == slice(32, 64)
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    with pytest.raises(ValueError, match="divisible"):
        trainer._rows(64)


def test_torchrun_cli_writes_once_and_matches_one_process(tmp_path):
    import os
    import shutil
    import subprocess
    import sys

    import numpy as np

    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.fail("torchrun (installed with torch) is not on PATH")
    xs = []
    for world in (1, 2):
        out = tmp_path / f"run{world}"
        cmd = [torchrun, "--standalone", f"--nproc_per_node={world}", "-m", "recompose",
               "sample", "--model", "A=ring", "--model", "B=bar", "--expr", "A * B",
               "--sampler", "ula", "--levels", "10", "--num-samples", "300", "--seed", "2",
               "--out", str(out), "--quiet"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT,
                              env=os.environ | {"OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert json.loads((out / "config.json").read_text())["world_size"] == world
        xs.append(np.load(out / "samples.npz")["x"])
    # the same command without torchrun draws the same stream (one process, the same blocks)
    plain = subprocess.run([sys.executable, "-m", "recompose", *cmd[cmd.index("sample"):-3],
                            "--out", str(tmp_path / "plain"), "--quiet"],
                           capture_output=True, text=True, timeout=TIMEOUT,
                           env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert plain.returncode == 0, plain.stderr[-2000:]
    xs.append(np.load(tmp_path / "plain" / "samples.npz")["x"])
    assert xs[0].shape == (300, 2) and (xs[0] == xs[1]).all() and (xs[0] == xs[2]).all()


def test_a_sharded_run_is_its_blocks_run_one_by_one():
    """``shard=True`` in one process, exactly: block ``b`` is the unsharded run of its chains
    seeded ``block_seed(seed, b)``, blocks concatenated in block order; the merged diagnostics
    are chain-weighted means (blocks of 64, 64 and 22 chains), the minimum acceptance the
    minimum, the evaluation counts those of one chain."""
    import numpy as np

    from recompose.distributed import block_seed

    torch.set_num_threads(1)
    model = rc.pretrained("ring") * rc.pretrained("bar")
    sharded = rc.sample(model, 150, rc.distributed.Sharded("hmc", block_size=64), num_levels=5,
                        num_steps=2, seed=9, shard=True)
    sizes = [64, 64, 22]
    blocks = [rc.sample(model, m, "hmc", num_levels=5, num_steps=2, seed=block_seed(9, b),
                        shard=False) for b, m in enumerate(sizes)]
    assert torch.equal(sharded.x, torch.cat([b.x for b in blocks]))
    w = np.asarray(sizes, dtype=np.float64) / 150
    for key in ("acceptance", "step_size", "divergent"):
        expected = sum(wi * np.asarray(getattr(b.info, key)) for wi, b in zip(w, blocks))
        np.testing.assert_allclose(getattr(sharded.info, key), expected, rtol=1e-12, atol=0)
    expected_min = np.min([b.info.acceptance_min for b in blocks], 0)
    np.testing.assert_array_equal(sharded.info.acceptance_min, expected_min)
    assert sharded.info.num_chains == 150 and sharded.info.settings["blocks"] == 3
    assert sharded.info.score_evals == blocks[0].info.score_evals


def test_the_sharded_progress_bar_counts_levels_not_blocks(capsys):
    """Three blocks of five levels: a bar of 15 levels (it counted 3 blocks before)."""
    import re

    rc.sample(rc.pretrained("ring"), 150, rc.distributed.Sharded("ula", block_size=64),
              num_levels=5, num_steps=1, seed=0, shard=True, progress=True)
    err = capsys.readouterr().err.replace("\r", "\n")
    totals = set(re.findall(r"\d+/(\d+) \[", err))
    assert totals == {"15"} and "level" in err, err[-500:]
