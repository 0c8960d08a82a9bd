import os

# Before torch loads (see recompose/__init__): waiting OpenMP threads sleep instead of spinning,
# so the suite does not slow 10-60x when another process shares the cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import math  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import recompose as rc  # noqa: E402
from recompose.models.base import DiffusionModel  # noqa: E402

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


class ScoreOnly(DiffusionModel):
    """Wraps a model and hides its energy (a stand-in for a score-parameterised network)."""

    has_energy = False

    def __init__(self, inner, name="score_only"):
        super().__init__()
        self.inner, self.schedule, self.event_shape, self.name = (
            inner, inner.schedule, inner.event_shape, name)

    def score(self, x, t):
        return self.inner.score(x, t)


def ring_gmm(k=8, radius=0.5, std=0.03):
    means = [[radius * math.cos(2 * math.pi * i / k), radius * math.sin(2 * math.pi * i / k)]
             for i in range(k)]
    return rc.GaussianMixture(means, std, name="ring")


def skewed_gmm():
    """A non-Gaussian 2D mixture with full, unequal covariances and unequal weights."""
    covs = torch.tensor([[[0.30, 0.12], [0.12, 0.10]],
                         [[0.05, -0.02], [-0.02, 0.20]],
                         [[0.15, 0.0], [0.0, 0.15]]], dtype=torch.float64)
    return rc.GaussianMixture([[-1.0, 0.0], [1.0, 0.5], [0.0, -1.2]], covs=covs,
                              weights=[0.5, 0.3, 0.2], name="skewed")


def randomise(net, seed=0, std=0.1):
    """Random weights everywhere (zero-initialised output layers would make tests trivial)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return net


def class_model(kind, seed=0):
    """A random class-conditional 8×8 model (10 classes + null), energy or score, float64."""
    from recompose.models.networks import ResMLP
    from recompose.models.parameterization import EnergyModel, ScoreModel

    net = randomise(ResMLP(64, width=32, num_blocks=2, emb_dim=16, num_classes=10), seed)
    cls = EnergyModel if kind == "energy" else ScoreModel
    return cls(net, rc.CosineSchedule(), (1, 8, 8), name="A").double()


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(1234)


class CallCounter:
    """Counts forward calls of a module (e.g. to check one batched network call)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.calls = 0
        module.register_forward_hook(self)

    def __call__(self, *args: object) -> None:
        self.calls += 1


def run(*args):
    """The command line in-process (click's runner); exceptions propagate."""
    from click.testing import CliRunner

    from recompose.cli.main import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def one_line_error(result, code):
    """The one ``Error:`` line of a failed command, after checking its exit code and that no
    traceback was printed."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1, result.output
    return lines[0]
