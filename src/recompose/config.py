"""Typed, frozen configs with JSON round-trips, saved next to every output."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields

__all__ = ["TrainConfig", "ClassifierConfig"]

# the entries' types, by their annotations (JSON has no other types)
_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,),
          "dict": (dict,), "str | None": (str, type(None))}
_NAMES = {"int": "a whole number", "float": "a number", "str": "a string",
          "bool": "true or false", "dict": "a JSON object", "str | None": "a string or null"}


class _Config:
    """What both configs share: checked types, positive counts, dict and JSON forms."""

    def _check_types(self) -> None:
        """One-line ``ValueError`` for an entry of the wrong type (e.g. from a JSON file), so
        that it fails here and not as a traceback deep inside training."""
        for f in fields(self):
            value, kind = getattr(self, f.name), str(f.type)
            if kind not in _TYPES:
                continue
            ok = isinstance(value, _TYPES[kind]) and (kind == "bool"
                                                      or not isinstance(value, bool))
            if ok and kind == "float":
                ok = math.isfinite(value)
            if not ok:
                raise ValueError(f"{f.name} must be {_NAMES[kind]}"
                                 f"{' (finite)' if kind == 'float' else ''}, got {value!r}")

    def _check_counts(self, *names: str) -> None:
        for name in names:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1")

    def _check_seed_and_threads(self) -> None:
        if not 0 <= self.seed < 2**63 - 1:  # torch seeds are 64-bit; seed + 1 seeds the data
            raise ValueError(f"seed must lie in [0, 2**63 - 1), got {self.seed}")
        if self.threads > 1024:
            raise ValueError(f"threads must be at most 1024, got {self.threads}")

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


@dataclass(frozen=True)
class TrainConfig(_Config):
    """Everything that determines a training run (and so its weights, bit for bit).

    Defaults are the R3 2D settings (Adam 1e-3, batch 1000, EMA 0.999, cosine schedule)
    with fewer steps than R3's 15,001 to fit 2 CPU cores.
    """

    data: str = "ring"
    parameterization: str = "energy"
    energy_form: str = "ae"
    # what a score network predicts (recompose.models.predictions); energy models: "epsilon"
    prediction: str = "epsilon"
    steps: int = 4000
    batch_size: int = 1000
    lr: float = 1e-3
    ema_decay: float = 0.999
    seed: int = 0
    checkpoint_every: int = 500
    threads: int = 1
    label_dropout: float = 0.0  # conditional data: probability of the null condition (CFG)
    distill_from: str | None = None  # a teacher (shipped name or model file): distillation
    dsm_weight: float = 0.0  # distillation: weight of the plain DSM term beside the teacher's
    contrast_weight: float = 0.0  # conditional distillation: weight of the condition-contrast term
    init_from: str | None = None  # a model file whose weights start the run (fine-tuning)
    network: dict = field(default_factory=lambda: {"arch": "resmlp", "dim": 2, "width": 128,
                                                   "num_blocks": 4, "emb_dim": 32, "widen": 1})
    schedule: dict = field(default_factory=lambda: {"name": "cosine", "s": 0.008,
                                                    "min_alpha_sq": 1e-6})

    def __post_init__(self) -> None:
        from .data import DATASETS

        self._check_types()
        if self.data not in DATASETS:
            raise ValueError(f"data must be one of {', '.join(DATASETS)}, got {self.data!r}")
        if self.parameterization not in ("score", "energy"):
            raise ValueError("parameterization must be 'score' or 'energy'")
        if self.energy_form not in ("ae", "l2"):
            raise ValueError(f"energy_form must be 'ae' or 'l2', got {self.energy_form!r}")
        self._check_counts("steps", "batch_size", "checkpoint_every", "threads")
        self._check_seed_and_threads()
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        from .models.predictions import PREDICTIONS

        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {', '.join(PREDICTIONS)}")
        if self.parameterization == "energy" and self.prediction != "epsilon":
            raise ValueError("an energy model's gradient is its ε-prediction (∇U = ε̂): "
                             "prediction must be 'epsilon'")
        if not 0 <= self.ema_decay < 1:
            raise ValueError("ema_decay must lie in [0, 1)")
        if not 0 <= self.label_dropout <= 1:
            raise ValueError("label_dropout must lie in [0, 1]")
        if not self.dsm_weight >= 0:
            raise ValueError("dsm_weight must be ≥ 0")
        if not self.contrast_weight >= 0:
            raise ValueError("contrast_weight must be ≥ 0")
        if self.contrast_weight and self.distill_from is None:
            raise ValueError("contrast_weight is a distillation term: set distill_from too")


@dataclass(frozen=True)
class ClassifierConfig(_Config):
    """A classifier training run: noise-conditional ``p_t(y | x_t)`` (``noisy``) or clean.

    Targets are class labels (cross-entropy) or, for float targets, independent binary labels
    (binary cross-entropy; e.g. object presence per grid cell).
    """

    data: str = "digits"
    noisy: bool = True
    steps: int = 3000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    augment_noise: float = 0.0  # clean classifiers: Gaussian input noise for robustness
    seed: int = 0
    threads: int = 1
    network: dict = field(default_factory=lambda: {"arch": "time_classifier", "dim": 64,
                                                   "num_classes": 10})
    schedule: dict = field(default_factory=lambda: {"name": "cosine", "s": 0.008,
                                                    "min_alpha_sq": 1e-6})

    def __post_init__(self) -> None:
        self._check_types()
        self._check_counts("steps", "batch_size", "threads")
        self._check_seed_and_threads()
