"""Issue-33 agreement table: recompose's samplers on SD3 / FLUX transformers and EDM UNets
against the diffusers schedulers' own loops, on tiny random-initialised pipelines built here
(:mod:`experiments.tiny_pipelines`; offline).

Rows: the ``"ode"`` sampler on the scheduler's own steps (:func:`~recompose.integrations.
diffusers.scheduler_levels`, from the flow's pure noise ``σ = 1``) against

* the flow-matching Euler loop (SD3: shift 3; FLUX: dynamic ``mu``), one prompt and true CFG at
  scale 4, written out in float64 (diffusers' ``step`` casts the sample to float32);
* the EDM Euler loop (ε and v preconditioning, Karras sigmas), written out in float64;
* diffusers' literal float32 ``FlowMatchEulerDiscreteScheduler.step`` loop, in float32.

Column: ``max |ours − reference| / max |reference|`` over ``n`` samples. Then the command line's
wall time on each pipeline's ``save_pretrained`` folder (a prompt product, ``--size 16``).

Run: ``python -m experiments.flow_backends`` (config ``configs/flow_backends.json``).
"""

# ruff: noqa: E402 (the first line comes before the slow imports)
from __future__ import annotations

from .common import announce

announce(__name__, "flow_backends: SD3 / FLUX / EDM against the diffusers loops on tiny "
         "pipelines, ≈ 1 min on 2 cores")

import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

import recompose as rc
from recompose.integrations.diffusers import from_pipeline, scheduler_levels

from . import tiny_pipelines as tiny
from .common import markdown_table, parse_config, script, write_results

__all__ = ["flow_rows", "edm_rows", "cli_seconds"]


def _relative(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours - ref).abs().max() / ref.abs().max())


def flow_rows(kind: str, steps: int, n: int, seed: int) -> list[dict]:
    """float64 agreement (one prompt, CFG 4) and, for SD3, the literal float32 loop."""
    rows = []
    for dtype in (torch.float64, torch.float32) if kind == "sd3" else (torch.float64,):
        pipe = tiny.PIPELINES[kind]().to(dtype)
        model = from_pipeline(pipe, height=16, width=16, max_sequence_length=tiny.T5_TOKENS)
        tiny.set_steps(pipe, steps)
        levels = scheduler_levels(model, pipe.scheduler)
        x = torch.randn(n, 4, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=dtype)
        cond, null = tiny.encode(pipe, "red cube"), tiny.encode(pipe, "")
        if dtype == torch.float32:  # diffusers' own step, as a user's pipeline runs it
            ours = rc.sample(model.prompt("red cube"), n, "ode", num_levels=levels, x_init=x).x
            ref = x
            with torch.no_grad():
                for t in pipe.scheduler.timesteps:
                    ref = pipe.scheduler.step(tiny.velocity(pipe, ref, t, *cond), t,
                                              ref).prev_sample
            rows.append({"model": kind, "composition": "prompt", "reference":
                         "diffusers step (float32)", "relative error": _relative(ours, ref)})
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rc.ApproximationWarning)
            cases = {"prompt": (model.prompt("red cube"), None),
                     "CFG 4": (model.prompt("red cube") ** 4 * model ** -3, 4.0)}
        for label, (composite, w) in cases.items():
            ours = rc.sample(composite, n, "ode", num_levels=levels, x_init=x).x
            ref = tiny.flow_loop(pipe, x, *cond, w=w, null=null)
            rows.append({"model": kind, "composition": label, "reference":
                         "Euler loop (float64)", "relative error": _relative(ours, ref)})
    return rows


def edm_rows(steps: int, n: int, seed: int) -> list[dict]:
    from diffusers import EDMEulerScheduler

    rows = []
    for prediction in ("epsilon", "v_prediction"):
        unet = tiny.tiny_unet().double()
        sch = EDMEulerScheduler(prediction_type=prediction)
        model = rc.from_diffusers(unet, sch)
        sch.set_timesteps(steps)
        x = torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed),
                        dtype=torch.float64) * float(sch.init_noise_sigma)
        ours = rc.sample(model, n, "ode", num_levels=scheduler_levels(model, sch), x_init=x).x
        rows.append({"model": f"EDM UNet ({prediction})", "composition": "unconditional",
                     "reference": "Euler loop (float64)",
                     "relative error": _relative(ours, tiny.edm_loop(unet, sch, x))})
    return rows


def cli_seconds(kind: str, levels: int) -> float:
    """Wall time of ``recompose sample`` on the pipeline's folder (a prompt product)."""
    with tempfile.TemporaryDirectory() as tmp:
        tiny.save(tiny.PIPELINES[kind](), Path(tmp) / kind)
        cmd = [sys.executable, "-m", "recompose", "sample", "--diffusers", str(Path(tmp) / kind),
               "--prompt", "P0=red cube", "--prompt", "P1=blue sphere", "--expr",
               "P0 * P1 / U", "--size", "16", "--sampler", "reverse", "--levels", str(levels),
               "--n", "4", "--out", str(Path(tmp) / "run"), "--quiet"]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, timeout=600,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    config = parse_config("flow_backends", __doc__, argv)
    rows = (flow_rows("sd3", config["steps"], config["n"], config["seed"])
            + flow_rows("flux", config["steps"], config["n"], config["seed"])
            + edm_rows(config["edm_steps"], config["n"], config["seed"]))
    table = markdown_table(list(rows[0]), [[r["model"], r["composition"], r["reference"],
                                            f"{r['relative error']:.1e}"] for r in rows])
    timing = {kind: cli_seconds(kind, config["cli_levels"]) for kind in tiny.PIPELINES}
    table += "\n\n" + markdown_table(["pipeline folder", "recompose sample (s)"],
                                     [[k, f"{v:.1f}"] for k, v in timing.items()])
    write_results(config, {"rows": rows, "cli_seconds": timing}, table)
    print(table)
    print(f"\noutputs in {config['out']}/")


if __name__ == "__main__":
    script(main)()
