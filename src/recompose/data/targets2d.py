r"""Exact composed targets for the 2D experiments (the smoothed-density protocol).

Uniform densities have hard edges, so a sample one hair outside would score ``log 0 = −∞``
and a negation ``p_L / p_S^α`` would be infinite wherever ``p_S = 0``. Following Sjöberg et
al. (2023; see ``r3-reference.md`` §2.8) every uniform ``U(S)`` is smoothed to

    p̃_S = 0.99 · U(S) + 0.01 · U(W \ S),        W = [−1.1, 1.1]²

and the composed targets are built from these (the ring stays an exact Gaussian mixture):

* product   ``ring · bar``            ∝ GMM(x) · p̃_bar(x)         (normalised with normal CDFs)
* mixture   ``½ left_bar + ½ right_bar``  = ½ p̃_left + ½ p̃_right
* negation  ``large_box / small_box^α``  ∝ p̃_L(x) · p̃_S(x)^{−α}, α = 0.3 (piecewise constant)

Each target gives an exact ``log_prob`` (``−∞`` outside ``W``, reported separately), exact
``sample``, and ``in_support`` — the hard support of the ideal composition (the product's two
modes inside the bar; either bar; the large box minus the small box).
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import Tensor

from .toy2d import Box, Ring, get_toy2d

__all__ = ["WINDOW", "ProductTarget", "MixtureTarget", "NegationTarget", "TARGETS"]

WINDOW = Box("window", -1.1, 1.1, -1.1, 1.1)
FLOOR = 0.01


def _smoothed_log_prob(box: Box, x: Tensor) -> Tensor:
    inside = box.in_support(x)
    out = torch.where(inside, torch.tensor(math.log((1 - FLOOR) / box.area)),
                      torch.tensor(math.log(FLOOR / (WINDOW.area - box.area))))
    return out.to(torch.float64).masked_fill(~WINDOW.in_support(x), -math.inf)


def _uniform_in(region: callable, bounds: Box, n: int, g: torch.Generator) -> Tensor:
    """Rejection sampling of ``n`` uniform points of ``region`` inside ``bounds``."""
    out: list[Tensor] = [torch.empty(0, 2, dtype=torch.float64)]
    while sum(len(o) for o in out) < n:
        cand = bounds.sample(4 * n + 16, g).to(torch.float64)
        out.append(cand[region(cand)])
    return torch.cat(out)[:n]


def _phi(z: Tensor) -> Tensor:
    return 0.5 * (1 + torch.erf(z / math.sqrt(2)))


class ProductTarget:
    """``ring · bar`` with the smoothed bar."""

    name = "product"
    parts = ("ring", "bar")

    def __init__(self) -> None:
        self.ring: Ring = get_toy2d("ring")
        self.bar: Box = get_toy2d("bar")
        p_bar = self._gmm_mass(self.bar)
        p_win = self._gmm_mass(WINDOW)
        self.log_c = math.log((1 - FLOOR) / self.bar.area * p_bar
                              + FLOOR / (WINDOW.area - self.bar.area) * (p_win - p_bar))

    def _gmm_mass(self, box: Box) -> float:
        x0, x1, y0, y1 = box.bounds
        m, s = self.ring.means.double(), self.ring.std
        px = _phi((x1 - m[:, 0]) / s) - _phi((x0 - m[:, 0]) / s)
        py = _phi((y1 - m[:, 1]) / s) - _phi((y0 - m[:, 1]) / s)
        return float((px * py).mean())

    def log_prob(self, x: Tensor) -> Tensor:
        """The exact normalised log-density of ``ring · p̃_bar`` at ``x`` ``(B, 2)``, shape ``(B,)``
        (float64)."""
        x = x.to(torch.float64)
        return self.ring.log_prob(x) + _smoothed_log_prob(self.bar, x) - self.log_c

    def sample(self, n: int, g: torch.Generator) -> Tensor:
        """``n`` exact draws ``(n, 2)`` (float64): ring draws kept with probability proportional
        to ``p̃_bar``."""
        ratio = FLOOR / (WINDOW.area - self.bar.area) / ((1 - FLOOR) / self.bar.area)
        out: list[Tensor] = []
        while sum(len(o) for o in out) < n:
            c = self.ring.sample(4 * n, g).to(torch.float64)
            keep = torch.where(self.bar.in_support(c), 1.0, ratio) * WINDOW.in_support(c)
            out.append(c[torch.rand(len(c), generator=g, dtype=torch.float64) < keep])
        return torch.cat(out)[:n]

    def in_support(self, x: Tensor) -> Tensor:
        """``(B,)`` bool: within 4 standard deviations of the two ring modes inside the bar."""
        modes = torch.tensor([[0.0, 0.5], [0.0, -0.5]], dtype=torch.float64)
        near = torch.cdist(x.to(torch.float64), modes).min(1).values < 4 * self.ring.std
        return near & self.bar.in_support(x)


class MixtureTarget:
    """``½ left_bar + ½ right_bar`` (weights configurable)."""

    name = "mixture"
    parts = ("left_bar", "right_bar")

    def __init__(self, weights: tuple[float, float] = (0.5, 0.5)) -> None:
        self.bars = [get_toy2d("left_bar"), get_toy2d("right_bar")]
        self.weights = weights

    def log_prob(self, x: Tensor) -> Tensor:
        """The exact log-density ``log Σ_k w_k p̃_k(x)`` of the smoothed bars at ``x`` ``(B, 2)``,
        shape ``(B,)`` (float64)."""
        terms = torch.stack([math.log(w) + _smoothed_log_prob(b, x)
                             for w, b in zip(self.weights, self.bars)], 1)
        return torch.logsumexp(terms, 1)

    def sample(self, n: int, g: torch.Generator) -> Tensor:
        """``n`` exact draws ``(n, 2)`` (float64): a bar by its weight, then a draw from its
        smoothed density."""
        comp = torch.multinomial(torch.tensor(self.weights), n, True, generator=g)
        floor = torch.rand(n, generator=g) < FLOOR
        out = torch.empty(n, 2, dtype=torch.float64)
        for k, bar in enumerate(self.bars):
            m = (comp == k) & ~floor
            out[m] = bar.sample(int(m.sum()), g).to(torch.float64)
            m = (comp == k) & floor
            out[m] = _uniform_in(lambda c, b=bar: ~b.in_support(c), WINDOW, int(m.sum()), g)
        return out

    def in_support(self, x: Tensor) -> Tensor:
        """``(B,)`` bool: inside either bar."""
        return self.bars[0].in_support(x) | self.bars[1].in_support(x)


class NegationTarget:
    """``large_box^β · small_box^{−α}`` with smoothed boxes (β = 1 ours, 1.3 in the R3
    notebook); piecewise constant on three regions."""

    name = "negation"
    parts = ("large_box", "small_box")

    def __init__(self, alpha: float = 0.3, beta: float = 1.0) -> None:
        self.alpha, self.beta = alpha, beta
        self.large, self.small = get_toy2d("large_box"), get_toy2d("small_box")
        # unnormalised log density on: small box, large \ small, window \ large
        ls = [math.log((1 - FLOOR) / self.large.area), math.log(FLOOR / (WINDOW.area
                                                                          - self.large.area))]
        ss = [math.log((1 - FLOOR) / self.small.area), math.log(FLOOR / (WINDOW.area
                                                                          - self.small.area))]
        ls = [beta * v for v in ls]
        self.region_logp = [ls[0] - alpha * ss[0], ls[0] - alpha * ss[1], ls[1] - alpha * ss[1]]
        areas = [self.small.area, self.large.area - self.small.area,
                 WINDOW.area - self.large.area]
        log_z = math.log(sum(a * math.exp(lp) for a, lp in zip(areas, self.region_logp)))
        self.region_logp = [lp - log_z for lp in self.region_logp]
        self.region_mass = [a * math.exp(lp) for a, lp in zip(areas, self.region_logp)]

    def _region(self, x: Tensor) -> Tensor:
        r = torch.full(x.shape[:1], 2, dtype=torch.long)
        r[self.large.in_support(x)] = 1
        r[self.small.in_support(x)] = 0
        return r

    def log_prob(self, x: Tensor) -> Tensor:
        """The exact normalised log-density at ``x`` ``(B, 2)``, shape ``(B,)`` (float64): constant
        on each of the three regions, ``−∞`` outside the window."""
        lp = torch.tensor(self.region_logp, dtype=torch.float64)[self._region(x)]
        return lp.masked_fill(~WINDOW.in_support(x), -math.inf)

    def sample(self, n: int, g: torch.Generator) -> Tensor:
        """``n`` exact draws ``(n, 2)`` (float64): a region by its mass, then uniform in it."""
        reg = torch.multinomial(torch.tensor(self.region_mass), n, True, generator=g)
        out = torch.empty(n, 2, dtype=torch.float64)
        for k in range(3):
            m = reg == k
            out[m] = _uniform_in(lambda c, k=k: self._region(c) == k, WINDOW, int(m.sum()), g)
        return out

    def in_support(self, x: Tensor) -> Tensor:
        """``(B,)`` bool: inside the large box and outside the small one."""
        return self.large.in_support(x) & ~self.small.in_support(x)


TARGETS = {"product": ProductTarget, "mixture": MixtureTarget, "negation": NegationTarget,
           "negation_r3": partial(NegationTarget, alpha=0.3, beta=1.3)}
