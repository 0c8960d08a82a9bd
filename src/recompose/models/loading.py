"""Build models from configs and load model files (no code execution, no pickle).

``recompose.pretrained(name, parameterization)`` loads one of the shipped 2D models;
:func:`load_model` loads any model file written by :mod:`recompose.io` or the trainer.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

from ..errors import first_line
from ..io import CheckpointError, read_model_file
from ..schedules import get_schedule
from .base import DiffusionModel
from .networks import build_network
from .parameterization import EnergyModel, ScoreModel

__all__ = ["build_model", "load_model", "pretrained", "PRETRAINED", "shipped_path",
           "model_file"]

PRETRAINED = ("ring", "bar", "left_bar", "right_bar", "large_box", "small_box")
IMAGE_PRETRAINED = ("digits", "digits-cond", "clevr")
# score: ε network; energy: energy network trained from scratch; distilled: energy network
# distilled from the score model (recompose.training.distill)
PARAMETERIZATIONS = ("score", "energy", "distilled")


def build_model(config: dict) -> DiffusionModel:
    """An (untrained) model from a config: ``network``, ``parameterization``, ``schedule``…"""
    net = build_network(config["network"])
    schedule = get_schedule(config["schedule"])
    shape = tuple(config["event_shape"])
    name = config.get("name")
    if config["parameterization"] == "energy":
        return EnergyModel(net, schedule, shape, form=config.get("energy_form", "ae"), name=name)
    if config["parameterization"] == "score":
        return ScoreModel(net, schedule, shape, name=name,
                          prediction=config.get("prediction", "epsilon"))
    raise CheckpointError(f"unknown parameterization {config['parameterization']!r}")


def load_model(path: Path | str, name: str | None = None) -> DiffusionModel:
    """Load a model file (or checkpoint folder) in eval mode; one-line errors on bad files."""
    tensors, config = read_model_file(path)
    if config.get("kind") == "classifier":
        raise CheckpointError(f"{path} holds a classifier, not a diffusion model; load it with "
                              "recompose.training.classifier.load_classifier")
    try:
        model = build_model(config)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: its config does not describe a known model ({err})") \
            from None
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    bad_shape = [k for k in own if k in tensors and own[k].shape != tensors[k].shape]
    if missing or unexpected or bad_shape:
        what = (missing and f"missing {missing[0]}") or (unexpected and f"unexpected "
                f"{unexpected[0]}") or f"shape of {bad_shape[0]}"
        raise CheckpointError(f"{path}: weights do not match the {config['network'].get('arch')}"
                              f" architecture in its config ({what})")
    model.load_state_dict(tensors)
    if name is not None:
        model.name = name
    model = model.eval().requires_grad_(False)
    _check_event_shape(model, path)
    return model


def _check_event_shape(model: DiffusionModel, path: Path | str) -> None:
    """One evaluation at the declared event shape, so a file whose network does not fit it
    fails here, in one line, instead of deep inside torch later."""
    x = torch.zeros((1, *model.event_shape))
    try:
        score = model.score(x, 0.5)
    except (RuntimeError, ValueError, TypeError) as err:
        first = first_line(err)
        raise CheckpointError(f"{path}: its network does not accept the declared event shape "
                              f"{tuple(model.event_shape)} ({first})") from None
    if score.shape != x.shape:
        raise CheckpointError(f"{path}: its network maps the declared event shape "
                              f"{tuple(model.event_shape)} to {tuple(score.shape[1:])}")


def pretrained(name: str, parameterization: str = "energy") -> DiffusionModel:
    """A shipped diffusion model. 2D: ``ring``, ``bar``, ``left_bar``, ``right_bar``,
    ``large_box``, ``small_box``; images: ``digits`` (unconditional 8×8 digits),
    ``digits-cond`` (class-conditional; null class = unconditional) and ``clevr``
    (position-conditioned 16×16 scenes; ``.given((x, y))``). ``parameterization`` is
    ``"score"`` (ε network), ``"energy"`` (energy network trained from scratch) or
    ``"distilled"`` (energy network distilled from the score model)."""
    if name not in PRETRAINED + IMAGE_PRETRAINED:
        raise ValueError(f"unknown pretrained model {name!r}; choose one of "
                         f"{', '.join(PRETRAINED + IMAGE_PRETRAINED)}")
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {', '.join(PARAMETERIZATIONS)}, "
                         f"got {parameterization!r}")
    return load_model(shipped_path(f"{name}-{parameterization}"), name=name)


def shipped_path(name: str) -> Path:
    """Path of a shipped model or classifier file (``digits-energy``, ``digits-noisy-clf``, …)."""
    ref = resources.files("recompose") / "pretrained" / f"{name}.safetensors"
    path = Path(str(ref))
    if not path.is_file():
        raise CheckpointError(f"shipped file {path.name} is missing from the install; "
                              "reinstall recompose")
    return path


def model_file(spec: str, default_parameterization: str = "energy",
               names: tuple[str, ...] = PRETRAINED + IMAGE_PRETRAINED) -> Path:
    """The file a model spec names: ``name`` or ``name:parameterization`` for a shipped model
    among ``names``, otherwise a path to a model file."""
    name, _, param = spec.partition(":")
    if name in names:
        param = param or default_parameterization
        if param not in PARAMETERIZATIONS:
            raise ValueError(f"unknown parameterization {param!r} in {spec!r}: use "
                             f"{name}:score, {name}:energy or {name}:distilled")
        return shipped_path(f"{name}-{param}")
    path = Path(spec)
    if not path.exists() and name in IMAGE_PRETRAINED:
        raise ValueError(f"{name!r} is a shipped image model, not one of the models accepted "
                         f"here ({', '.join(names)}); use it from Python: "
                         f"recompose.pretrained({name!r}, ...)")
    if not path.exists():
        raise ValueError(f"unknown model {spec!r}: neither a shipped model nor a model file "
                         f"(shipped: {', '.join(names)})")
    return path
