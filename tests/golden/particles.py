"""Golden values of the weighted samplers (SMC in both proposal forms, FKC with and without
moves, grouped particles) and of the final-level bookkeeping they return: samples, the
log-weights before the last resampling, the evidence and the resampled levels.

``particles.pt`` was written by the code at commit 2355fc7, before the samplers became objects
(issue #31), so that refactor is checked bit for bit on these samplers too. Regenerate only
deliberately: ``python tests/golden/particles.py`` (from the repository root).
"""

from pathlib import Path

import torch

import recompose as rc

REFERENCE = Path(__file__).with_name("particles.pt")


def _pack(result) -> dict[str, torch.Tensor]:
    info = result.info
    logz = info.log_evidence if isinstance(info.log_evidence, list) else [info.log_evidence]
    return {"x": result.x, "log_weights": result.log_weights,
            "log_evidence": torch.tensor(logz, dtype=torch.float64),
            "ess": torch.tensor(info.ess, dtype=torch.float64),
            "resampled": torch.tensor(info.resampled, dtype=torch.int64),
            "evals": torch.tensor([info.score_evals, info.energy_evals])}


def cases() -> dict[str, torch.Tensor]:
    from experiments.digits import load_digits

    ring = rc.GaussianMixture([[0.5, 0.0], [-0.5, 0.0], [0.0, 0.5]], 0.05, name="g1")
    two = rc.GaussianMixture([[0.0, 0.5], [0.0, -0.5]], 0.1, name="g2")
    a, b = rc.pretrained("ring", "energy"), rc.pretrained("bar", "energy")
    a_s, b_s = rc.pretrained("ring", "score"), rc.pretrained("bar", "score")
    runs = {
        "gmm/smc-ais": (ring * two, dict(sampler="smc", seed=1, num_levels=8)),
        "gmm/smc-ddpm": (ring * two, dict(sampler="smc", seed=2, num_levels=8,
                                          proposal="ddpm", num_steps=1)),
        "gmm/smc-mala": (ring * two, dict(sampler="smc", seed=3, num_levels=8, moves="mala",
                                          ess_threshold=1.0, resampling="residual")),
        "gmm-neg/fkc": (ring / two ** 0.5, dict(sampler="fkc", seed=4, num_levels=8)),
        "gmm/fkc": (ring * two, dict(sampler="fkc", seed=5, num_levels=8)),
        "gmm/fkc-uhmc": (ring * two, dict(sampler="fkc", seed=6, num_levels=8, moves="uhmc",
                                          num_steps=2)),
        "gmm/fkc-hmc": (ring * two, dict(sampler="fkc", seed=7, num_levels=8, moves="hmc",
                                         resampling="stratified")),
        "2d-e/smc": (a * b, dict(sampler="smc", seed=8, num_levels=8)),
        "2d-s/fkc": (a_s * b_s, dict(sampler="fkc", seed=9, num_levels=8)),
    }
    out = {}
    for key, (model, kw) in runs.items():
        result = rc.sample(model, 64, **kw)
        out |= {f"{key}/{k}": v for k, v in _pack(result).items()}
    models = load_digits()
    y = torch.arange(12) % 3
    cfg = rc.cfg(models["cond"].given(y), models["cond"], 3.0)
    for sampler in ("smc", "fkc"):
        result = rc.sample(cfg, 12, sampler, seed=10, num_levels=6, groups=y)
        out |= {f"digits/{sampler}-groups/{k}": v for k, v in _pack(result).items()}
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    torch.save(cases(), REFERENCE)
