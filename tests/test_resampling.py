"""Resampling schemes: unbiased offspring counts, exact behaviour on equal weights, errors."""

import math

import pytest
import torch

from recompose.resampling import SCHEMES, effective_sample_size, normalize_log_weights, resample

WEIGHTS = torch.tensor([0.05, 0.30, 0.01, 0.14, 0.25, 0.05, 0.20], dtype=torch.float64)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_offspring_counts_are_unbiased(scheme):
    """E[N_j] = n W_j: the mean count over R seeded draws is within 4.5 Monte-Carlo standard
    errors of n W_j for every particle (the MCSE is each count's sample std over √R)."""
    n, reps = WEIGHTS.shape[0], 4000
    g = torch.Generator().manual_seed(0)
    log_w = WEIGHTS.log() + 3.7  # unnormalised on purpose
    counts = torch.stack([torch.bincount(resample(log_w, scheme, generator=g), minlength=n)
                          for _ in range(reps)]).double()
    mean, mcse = counts.mean(0), counts.std(0) / math.sqrt(reps)
    expected = n * WEIGHTS
    assert torch.all((mean - expected).abs() <= 4.5 * mcse.clamp(min=1e-3)), (mean, expected)
    assert torch.all(counts.sum(1) == n)


@pytest.mark.parametrize("scheme", ["systematic", "stratified", "residual"])
def test_equal_weights_keep_every_particle_once(scheme):
    idx = resample(torch.zeros(50, dtype=torch.float64), scheme,
                   generator=torch.Generator().manual_seed(3))
    assert torch.equal(idx, torch.arange(50))


def test_low_variance_schemes_bound_the_counts():
    """Systematic and residual resampling give each particle ⌊nW⌋ or ⌈nW⌉ copies (systematic)
    and at least ⌊nW⌋ (residual); multinomial does not."""
    n = WEIGHTS.shape[0]
    g = torch.Generator().manual_seed(1)
    for _ in range(200):
        sys_counts = torch.bincount(resample(WEIGHTS.log(), "systematic", generator=g),
                                    minlength=n).double()
        assert torch.all((sys_counts - n * WEIGHTS).abs() < 1)
        res_counts = torch.bincount(resample(WEIGHTS.log(), "residual", generator=g),
                                    minlength=n).double()
        assert torch.all(res_counts >= torch.floor(n * WEIGHTS))


def test_a_constant_shift_of_the_log_weights_changes_nothing():
    for scheme in SCHEMES:
        a = resample(WEIGHTS.log(), scheme, generator=torch.Generator().manual_seed(5))
        b = resample(WEIGHTS.log() - 800.0, scheme, generator=torch.Generator().manual_seed(5))
        assert torch.equal(a, b)


def test_effective_sample_size_and_normalisation():
    assert float(effective_sample_size(torch.zeros(10))) == pytest.approx(10)
    one = torch.full((10,), -math.inf, dtype=torch.float64)
    one[3] = 0.0
    assert float(effective_sample_size(one)) == pytest.approx(1)
    assert float(effective_sample_size(WEIGHTS.log())) == pytest.approx(
        1 / float((WEIGHTS**2).sum()))
    log_w, total = normalize_log_weights(WEIGHTS.log() + 2.0)
    assert torch.allclose(log_w.exp(), WEIGHTS) and float(total) == pytest.approx(2.0)
    # a zero weight is never drawn
    assert 3 not in resample(torch.where(torch.arange(7) == 3, -math.inf, 0.0), "multinomial",
                             generator=torch.Generator().manual_seed(0)).tolist()


def test_bad_weights_and_schemes_raise():
    with pytest.raises(FloatingPointError, match="NaN"):
        resample(torch.tensor([0.0, math.nan]))
    with pytest.raises(FloatingPointError, match="zero weight"):
        resample(torch.full((3,), -math.inf))
    with pytest.raises(ValueError, match="systematic"):
        resample(torch.zeros(3), "bogus")


def _first_above(cdf, u):
    """First j with cdf[j] > u, written out (the last index when rounding leaves cdf < 1)."""
    out = []
    for v in u.tolist():
        j = next((j for j, c in enumerate(cdf.tolist()) if c > v), len(cdf) - 1)
        out.append(j)
    return torch.tensor(out)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_each_scheme_returns_exactly_its_indices(scheme):
    """The indices of each scheme recomputed from the same generator's draws: systematic one
    uniform for all strata, stratified one per stratum, multinomial sorted uniforms, residual
    ⌊nW⌋ copies then the rest by multinomial on the residual weights; all sorted; the last
    particle can be drawn."""
    log_w = torch.tensor([0.05, 0.30, 0.01, 0.14, 0.25, 0.05, 0.20],
                         dtype=torch.float64).log()
    n = log_w.shape[0]
    w = torch.softmax(log_w, 0)
    for seed in range(20):
        got = resample(log_w, scheme, generator=torch.Generator().manual_seed(seed))
        g = torch.Generator().manual_seed(seed)
        k = torch.arange(n, dtype=torch.float64)
        if scheme == "systematic":
            u = (k + torch.rand((), generator=g, dtype=torch.float64)) / n
            expected = _first_above(torch.cumsum(w, 0), u)
        elif scheme == "stratified":
            u = (k + torch.rand(n, generator=g, dtype=torch.float64)) / n
            expected = _first_above(torch.cumsum(w, 0), u)
        elif scheme == "multinomial":
            u = torch.sort(torch.rand(n, generator=g, dtype=torch.float64)).values
            expected = _first_above(torch.cumsum(w, 0), u)
        else:
            copies = torch.floor(n * w).long()
            kept = torch.repeat_interleave(torch.arange(n), copies)
            rest = n - len(kept)
            residual = n * w - copies
            u = torch.sort(torch.rand(rest, generator=g, dtype=torch.float64)).values
            extra = _first_above(torch.cumsum(residual / residual.sum(), 0), u)
            expected = torch.sort(torch.cat([kept, extra])).values
        assert torch.equal(got, expected), (scheme, seed, got, expected)
        assert torch.equal(got, torch.sort(got).values)
    # the last particle alone carries the weight: every index is the last one
    last = torch.tensor([-1e9] * 4 + [0.0], dtype=torch.float64)
    assert torch.equal(resample(last, scheme, generator=torch.Generator().manual_seed(0)),
                       torch.full((5,), 4))
