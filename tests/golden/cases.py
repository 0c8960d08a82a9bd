"""Golden values: seeded samples, energies and scores of many composites and every sampler.

``reference.pt`` was written by the code at commit c5cf87b (before the library/applications
split) and every later change has reproduced it bit for bit on the development platform (CPU,
torch 2.13). Regenerate only deliberately: ``python tests/golden/cases.py`` (from the repository
root) overwrites it.
"""

from pathlib import Path

import torch

import recompose as rc

REFERENCE = Path(__file__).with_name("reference.pt")
SAMPLERS = ("reverse", "ula", "uhmc", "mala", "hmc")


def _run(model, n, sampler, seed, levels, steps, **kw):
    mcmc = {} if sampler == "reverse" else {"num_steps": steps}
    return rc.sample(model, n, sampler, seed=seed, num_levels=levels, **mcmc, **kw).x


def cases() -> dict[str, torch.Tensor]:
    from experiments.clevr import compose_positions, load_clevr
    from experiments.digits import guided, load_digits

    out = {}
    ring = rc.GaussianMixture([[0.5, 0.0], [-0.5, 0.0], [0.0, 0.5]], 0.05, name="g1")
    two = rc.GaussianMixture([[0.0, 0.5], [0.0, -0.5]], 0.1, name="g2")
    for s in SAMPLERS:
        out[f"gmm/{s}"] = _run(ring * two, 64, s, 1, 8, 2)
        out[f"gmm-neg/{s}"] = _run(ring / two ** 0.5, 64, s, 2, 8, 2)
        out[f"gmm-mix/{s}"] = _run(rc.mixture([ring, two], [0.3, 0.7]), 64, s, 3, 8, 2)
    a, b = rc.pretrained("ring", "energy"), rc.pretrained("bar", "energy")
    a_s, b_s = rc.pretrained("ring", "score"), rc.pretrained("bar", "score")
    for s in SAMPLERS:
        out[f"2d-e/{s}"] = _run(a * b, 64, s, 4, 8, 2)
        out[f"2d-e-neg/{s}"] = _run(a / b ** 0.3, 64, s, 4, 8, 2)
    for s in ("reverse", "ula", "uhmc"):
        out[f"2d-s/{s}"] = _run(a_s * b_s, 64, s, 5, 8, 2)
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    for name, m in {"AB": a * b, "AmixB": a + b, "neg": a / b ** 0.3}.items():
        out[f"es/{name}/e"], out[f"es/{name}/s"] = m.energy_and_score(x, 0.3)
    out["es/AsBs/s"] = (a_s * b_s).score(x, 0.3)
    models = load_digits()
    y = torch.arange(12) % 10
    for kind in ("cfg", "classifier"):
        m = guided(kind, 3.0, y, models)
        for s in ("reverse", "hmc", "ula"):
            out[f"digits/{kind}/{s}"] = _run(m, 12, s, 6, 6, 1)
        xi = torch.randn(12, 1, 8, 8, generator=torch.Generator().manual_seed(1))
        out[f"digits/{kind}/score"] = m.score(xi, 0.4)
        out[f"digits/{kind}/energy"] = m.energy(xi, 0.4)
    for p in ("energy", "score"):
        pos = torch.tensor([[[0.25, 0.3], [0.7, 0.3], [0.5, 0.75]]]).expand(4, 3, 2)
        m = compose_positions(load_clevr(p), pos)
        for s in ("reverse", "ula", "hmc") if p == "energy" else ("reverse", "uhmc"):
            out[f"clevr/{p}/{s}"] = _run(m, 4, s, 7, 4, 1, clip=(-1, 1))
        xi = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
        out[f"clevr/{p}/score"] = m.score(xi, 0.5)
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    torch.save(cases(), REFERENCE)
