"""Conditional models: batched evaluation of products over one network, CFG, classifier factor."""

import pytest
import torch

import recompose as rc
from conftest import CallCounter, class_model, randomise
from recompose.models.classifier import ClassifierFactor
from recompose.models.networks import PositionUNet, ResMLP, TimeClassifier, shared_time
from recompose.models.parameterization import EnergyModel, ScoreModel
from recompose.schedules import CosineSchedule
from recompose.utils import as_time


def _position_model(kind, seed=0, late=False):
    net = randomise(PositionUNet(channels=8, emb_dim=16, late=late), seed, std=0.05)
    cls = EnergyModel if kind == "energy" else ScoreModel
    return cls(net, CosineSchedule(), (3, 16, 16), name="A").double()


@pytest.mark.parametrize("late", [False, True])
@pytest.mark.parametrize("kind", ["score", "energy"])
def test_batched_position_product_equals_the_unbatched_sum(kind, late):
    model = _position_model(kind, late=late)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 16, 16, generator=gen, dtype=torch.float64)
    pos = torch.rand(4, 3, 2, generator=gen)  # three positions per chain, different per chain
    views = [model.given(pos[:, k]) for k in range(3)]
    comp = rc.product([*views, model ** -2.0])
    assert len(comp._groups) == 1 and comp.num_networks == 4
    t = 0.37
    expected = sum(v.score(x, t) for v in views) - 2.0 * model.score(x, t)
    counter = CallCounter(model.net.out)  # the output layer runs once per network evaluation
    got = comp.score(x, t)
    assert counter.calls == 1  # one batched network call, not four
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)
    if kind == "energy":
        e, s = comp.energy_and_score(x, t)
        e_expected = sum(v.energy(x, t) for v in views) - 2.0 * model.energy(x, t)
        torch.testing.assert_close(e, e_expected, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(s, expected, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(comp.energy(x, t), e_expected, rtol=1e-9, atol=1e-9)


def test_a_late_conditioned_network_runs_its_trunk_once_per_product():
    model = _position_model("energy", late=True)
    net = model.net
    x = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    c = net.encode_condition(torch.rand(4 * 5, 2, generator=torch.Generator().manual_seed(3)))
    t = torch.full((5,), 0.4, dtype=torch.float64)
    stacked = net(torch.cat([x] * 4), t.repeat(4), c)
    torch.testing.assert_close(net.forward_copies(x, t, c), stacked, rtol=1e-12, atol=1e-12)
    rows = {"trunk": [], "head": []}  # input rows of each call of the trunk and of the head
    for part, module in (("trunk", net.down1), ("head", net.head_inp)):
        module.register_forward_hook(lambda m, i, o, part=part: rows[part].append(len(i[0])))
    comp = rc.product([model.given(c[5 * k:5 * (k + 1), :2]) for k in range(4)])
    comp.energy_and_score(x, 0.4)
    assert rows == {"trunk": [5], "head": [20]}  # the trunk on B rows, the head on 4·B
    with pytest.raises(ValueError, match="multiple"):
        net.forward_copies(x, t, c[:7])


@pytest.mark.parametrize("kind", ["score", "energy"])
@pytest.mark.parametrize("w", [1.0, 3.0, 10.0])
def test_cfg_composite_equals_the_formula(kind, w):
    model = class_model(kind, seed=2)
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y = torch.arange(6) % 10
    comp = rc.cfg(model.given(y), model, w)
    t = torch.rand(6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    s_null, s_y = model.score(x, t), model.given(y).score(x, t)
    torch.testing.assert_close(comp.score(x, t), s_null + w * (s_y - s_null),
                               rtol=1e-9, atol=1e-9)
    if kind == "energy":
        e_null, e_y = model.energy(x, t), model.given(y).energy(x, t)
        torch.testing.assert_close(comp.energy(x, t), e_null + w * (e_y - e_null),
                                   rtol=1e-9, atol=1e-9)


def test_conditions_change_the_output_and_null_is_the_parent():
    model = class_model("energy")
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    assert not torch.allclose(model.given(1).energy(x, 0.5), model.given(2).energy(x, 0.5))
    null = model.net.null_condition(3)
    torch.testing.assert_close(model.energy(x, 0.5, null), model.energy(x, 0.5))


def test_given_on_an_unconditional_model_is_refused():
    net = ResMLP(64, width=16, num_blocks=1)
    model = ScoreModel(net, CosineSchedule(), (1, 8, 8), name="plain")
    with pytest.raises(rc.CapabilityError, match="not trained with conditions"):
        model.given(3)
    cond = class_model("score")
    with pytest.raises(ValueError, match="class labels"):
        cond.given(10)
    pos = _position_model("score")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pos.given([1.5, 0.2])
    with pytest.raises(ValueError, match="chains"):
        rc.product([pos.given(torch.rand(5, 2)), pos]).score(torch.randn(4, 3, 16, 16).double(),
                                                             0.5)


def test_classifier_factor_score_is_autograd_of_log_likelihood():
    clf = randomise(TimeClassifier(dim=64, num_classes=10, width=32, num_blocks=2,
                                    emb_dim=16), seed=5).double()
    y = torch.tensor([0, 3, 7, 9])
    factor = ClassifierFactor(clf, y, CosineSchedule(), (1, 8, 8))
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    t = torch.full((4,), 0.3, dtype=torch.float64)
    log_p = torch.log_softmax(clf(x, t), dim=1)[torch.arange(4), y]
    (grad,) = torch.autograd.grad(log_p.sum(), x)
    e, s = factor.energy_and_score(x.detach(), 0.3)
    torch.testing.assert_close(e, -log_p.detach())
    torch.testing.assert_close(s, grad)
    # classifier guidance: s = s_model + λ ∇ log p_t(y|x)
    model = class_model("energy")
    guided = rc.guide(model, factor, 3.0)
    torch.testing.assert_close(guided.score(x.detach(), 0.3),
                               model.score(x.detach(), 0.3) + 3.0 * grad)


def test_sample_runs_on_a_batched_product_with_every_sampler():
    model = _position_model("energy").float()
    comp = rc.product([model.given([0.3, 0.3]), model.given([0.7, 0.6]), model ** -1.0])
    for sampler in ("reverse", "ula", "uhmc", "mala", "hmc"):
        steps = {} if sampler == "reverse" else {"num_steps": 1}  # reverse has no corrector
        r = rc.sample(comp, 3, sampler, num_levels=3, seed=0, **steps)
        assert r.x.shape == (3, 3, 16, 16) and bool(torch.isfinite(r.x).all())
        assert r.info.network_score_evals == r.info.score_evals * 3


def test_parameterisation_formulas_against_the_raw_network():
    """E = U_θ/σ_t with U_θ = ‖f_θ − x‖² ('ae'), s = −ε̂/σ_t, written out from the raw network."""
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    t = torch.tensor([0.1, 0.3, 0.6, 0.9], dtype=torch.float64)
    c = torch.tensor([1, 4, 10, 7])  # 10 is the null label
    sigma = CosineSchedule()(t)[1]
    energy_model, score_model = class_model("energy", seed=6), class_model("score", seed=6)
    u = ((energy_model.net(x, t, c) - x) ** 2).sum((1, 2, 3))
    torch.testing.assert_close(energy_model.energy(x, t, c), u / sigma, rtol=1e-12, atol=1e-12)
    eps = score_model.net(x, t, c)
    torch.testing.assert_close(score_model.score(x, t, c), -eps / sigma[:, None, None, None],
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["score", "energy"])
def test_factor_scores_of_a_batched_product_are_the_views_scores(kind):
    """The per-factor scores Feynman–Kac weights need: one batched call, each view's own score
    and exponent, and the per-chain flag of per-chain conditions."""
    model = _position_model(kind)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, 3, 16, 16, generator=gen, dtype=torch.float64)
    pos = torch.rand(3, 2, 2, generator=gen)
    views = [model.given(pos[:, k]) for k in range(2)]
    comp = rc.product([*views, model ** -1.0])
    counter = CallCounter(model.net.out)
    terms = rc.compose.factor_scores(comp, x, 0.4)
    assert counter.calls == 1 and comp.per_chain and not model.per_chain
    expected = [(1.0, v.score(x, 0.4)) for v in views] + [(-1.0, model.score(x, 0.4))]
    assert sorted(w for w, _, _ in terms) == sorted(w for w, _ in expected)
    for w, s in expected:
        got = [g for v, m, g in terms if v == w and m and torch.allclose(g, s, atol=1e-9)]
        assert got, w


@pytest.mark.parametrize("arch", ["resmlp", "resmlp-classes", "time_classifier"])
def test_one_time_for_the_batch_embeds_once_and_equals_the_per_row_path(arch):
    """A scalar time broadcast over the batch (``as_time``'s stride-0 expand) takes the fast
    path — the time embedding on one row, folded into ``fc1``'s bias — and gives what the
    per-row path gives on the same times materialised."""
    net = {"resmlp": lambda: ResMLP(dim=3), "resmlp-classes": lambda: ResMLP(dim=3, num_classes=4),
           "time_classifier": lambda: TimeClassifier(dim=3, num_classes=5)}[arch]()
    net = randomise(net.double(), seed=1)
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    shared = as_time(0.37, 6, x)
    assert shared.stride(0) == 0 and shared_time(shared).shape == (1,)
    assert shared_time(shared.clone()).shape == (6,)  # a materialised vector is used row by row
    rows = []
    net.blocks[0].emb.register_forward_hook(lambda m, i, o: rows.append(len(i[0])))
    args = (torch.arange(6) % 4,) if arch == "resmlp-classes" else ()
    fast, slow = net(x, shared, *args), net(x, shared.clone(), *args)
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)
    assert rows == ([6, 6] if arch == "resmlp-classes" else [1, 6])


def test_a_conjunction_counts_the_prior_once_for_every_number_of_conditions():
    """``conjunction(A, [c₁ … c_K])`` is ``∏_k p(x|c_k) · p(x)^{1−K}`` exactly, for K = 1, 2, 3
    (K = 1: the conditional itself); ``plain=True`` drops the prior's power."""
    model = class_model("score", seed=5)
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = 0.4
    labels = [3, 7, 1]
    single = {y: model.given(y).score(x, t) for y in labels}
    null = model.score(x, t)
    for k in (1, 2, 3):
        got = rc.conjunction(model, labels[:k]).score(x, t)
        expected = sum(single[y] for y in labels[:k]) + (1 - k) * null
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
        plain = rc.conjunction(model, labels[:k], plain=True).score(x, t)
        torch.testing.assert_close(plain, sum(single[y] for y in labels[:k]), rtol=1e-10,
                                   atol=1e-10)
