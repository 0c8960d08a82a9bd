"""Product's shared network calls: factors that are views of one network are grouped by their
``batch_slot`` and evaluated by ``network.stacked(conditions, exponents)`` in one call, with the
same energies and scores as the separately evaluated, weighted terms."""

import ast
from pathlib import Path

import pytest
import torch

import recompose as rc
from conftest import CallCounter, class_model
from recompose.models.base import BatchSlot, DiffusionModel
from recompose.models.networks import ResMLP
from recompose.models.parameterization import ScoreModel
from recompose.schedules import CosineSchedule

B = 5
LABELS_A = torch.tensor([0, 3, 7, 9, 2])  # per-chain conditions: every chain its own label
LABELS_B = torch.tensor([4, 4, 1, 8, 6])
EXPONENTS = (0.7, -1.3, 4.0, -2.4)  # distinct, some negative: a swapped pair changes the sums


def _views(model):
    """Four views of one network: two per-chain conditions, one broadcast, the null one."""
    null = model.net.null_condition(B)
    conds = [LABELS_A, LABELS_B, torch.tensor(5).expand(B), null]
    views = [model.given(LABELS_A), model.given(LABELS_B), model.given(5), model]
    return views, conds


def _inputs():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(B, 1, 8, 8, generator=gen, dtype=torch.float64)
    t = 0.05 + 0.9 * torch.rand(B, generator=gen, dtype=torch.float64)  # per-chain times
    return x, t


@pytest.mark.parametrize("kind", ["energy", "score"])
def test_grouped_product_equals_the_sum_of_separately_weighted_terms(kind):
    model = class_model(kind)
    views, conds = _views(model)
    comp = rc.product([v ** w for v, w in zip(views, EXPONENTS)])
    assert len(comp._groups) == 1 and not comp._single  # one group, nothing evaluated alone
    x, t = _inputs()
    # the oracle: each term through the network's own (x, t, c) method, one call per term
    s_expected = sum(w * model.score(x, t, c) for w, c in zip(EXPONENTS, conds))
    torch.testing.assert_close(comp.score(x, t), s_expected, rtol=1e-10, atol=1e-10)
    if kind == "energy":
        e_expected = sum(w * model.energy(x, t, c) for w, c in zip(EXPONENTS, conds))
        torch.testing.assert_close(comp.energy(x, t), e_expected, rtol=1e-10, atol=1e-10)
        e, s = comp.energy_and_score(x, t)
        torch.testing.assert_close(e, e_expected, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(s, s_expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["energy", "score"])
def test_a_product_of_views_of_one_network_makes_one_call_per_evaluation(kind):
    model = class_model(kind)
    views, _ = _views(model)
    comp = rc.product([v ** w for v, w in zip(views, EXPONENTS)])
    x, t = _inputs()
    counter = CallCounter(model.net)
    methods = [comp.score] + ([comp.energy, comp.energy_and_score] if kind == "energy" else [])
    for i, method in enumerate(methods, start=1):
        method(x, t)
        assert counter.calls == i, method.__name__  # K = 4 views, one forward call


def test_groups_by_network_and_keeps_lone_views_and_other_factors_alone():
    a, b = class_model("energy"), class_model("energy")
    comp = rc.product([a.given(1), b.given(2), a ** -0.5, b.given(3)])
    assert not comp._single and len(comp._groups) == 2  # one per network, never mixed
    assert {g.network for g in comp._groups} == {a, b}
    lone = rc.product([a.given(1), b ** 2.0])  # one view per network: nothing to share
    assert not lone._groups and len(lone._single) == 2
    unconditional = ScoreModel(ResMLP(64, width=8, num_blocks=1), CosineSchedule(), (1, 8, 8))
    assert unconditional.batch_slot is None


class _Family(DiffusionModel):
    """A non-network family ``N(α_t c, I)`` with a condition ``c``: the hook is not tied to
    networks or to the learned parameterisations."""

    has_energy = True

    def __init__(self):
        super().__init__()
        self.schedule, self.event_shape, self.calls = CosineSchedule(), (2,), []

    def stacked(self, conditions, weights):
        self.calls.append((list(conditions), list(weights)))
        family = self

        class Weighted(DiffusionModel):
            has_energy = True
            schedule, event_shape = family.schedule, family.event_shape

            def energy(self, x, t):
                alpha, _ = self.schedule(torch.as_tensor(t, dtype=x.dtype))
                return sum(w * 0.5 * ((x - alpha * c) ** 2).sum(1)
                           for c, w in zip(conditions, weights))

        return Weighted()


class _View(DiffusionModel):
    has_energy = True

    def __init__(self, family, c):
        super().__init__()
        self.family, self.c = family, torch.tensor(c, dtype=torch.float64)
        self.schedule, self.event_shape = family.schedule, family.event_shape

    @property
    def batch_slot(self):
        return BatchSlot(self.family, self.c)

    def energy(self, x, t):
        alpha, _ = self.schedule(torch.as_tensor(t, dtype=x.dtype))
        return 0.5 * ((x - alpha * self.c) ** 2).sum(1)


def test_product_passes_conditions_and_exponents_in_factor_order_to_the_hook():
    family = _Family()
    u, v, w = _View(family, [1.0, 0.0]), _View(family, [0.0, 2.0]), _View(family, [-1.0, 1.0])
    comp = rc.product([u ** 2.0, v ** -0.5, w])
    assert len(family.calls) == 1
    conds, weights = family.calls[0]
    assert weights == [2.0, -0.5, 1.0]
    assert [c.tolist() for c in conds] == [[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0]]
    x = torch.randn(7, 2, dtype=torch.float64)
    expect = 2.0 * u.energy(x, 0.3) - 0.5 * v.energy(x, 0.3) + w.energy(x, 0.3)
    torch.testing.assert_close(comp.energy(x, 0.3), expect)
    torch.testing.assert_close(comp.score(x, 0.3),
                               2.0 * u.score(x, 0.3) - 0.5 * v.score(x, 0.3) + w.score(x, 0.3))


def test_stacked_needs_one_weight_per_condition_and_a_conditional_network():
    model = class_model("score")
    with pytest.raises(ValueError, match="one weight per condition"):
        model.stacked([None, None], [1.0])
    plain = ScoreModel(ResMLP(64, width=8, num_blocks=1), CosineSchedule(), (1, 8, 8), "plain")
    with pytest.raises(rc.CapabilityError, match="plain is not a conditional model"):
        plain.stacked([None, None], [1.0, 2.0])


def test_base_does_not_import_compose():
    """The operators live in compose.py; base.py must not import it, not even lazily."""
    import recompose.models.base as base

    tree = ast.parse(Path(base.__file__).read_text())
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m.split(".")[-1] == "compose"], imported
