r"""Training classifiers: the noise-conditional ``p_t(y | x_t)`` used for guidance, and clean
classifiers used only for evaluation (never for generation).

Noise-conditional (``noisy=True``): ``t ~ U(0, 1)``, ``x_t = α_t x₀ + σ_t ε`` and the network
sees ``(x_t, t)``; loss ``−log p_θ(y | x_t, t)``. Clean: the network sees ``x₀`` (plus optional
Gaussian input noise ``augment_noise·ε`` so it is not thrown by slightly noisy samples).
The loss is cross-entropy on class labels unless another ``loss(logits, target)`` is given;
the data is the library dataset ``config.data`` unless another sampler (``sample(n,
generator) -> (x, target)``) is given. Adam with weight decay, full determinism from
``config.seed``.

The result is one model file (:mod:`recompose.io`) with ``kind = "classifier"`` in its config;
:func:`load_classifier` rebuilds the network.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ClassifierConfig
from ..data import get_dataset
from ..io import CheckpointError, read_model_file, save_model_file
from ..models.networks import build_network
from ..schedules import get_schedule, q_sample

__all__ = ["train_classifier", "load_classifier"]


def train_classifier(config: ClassifierConfig, out: Path | str,
                     progress: Callable[[int, float], None] | None = None,
                     data: object | None = None,
                     loss: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy) -> nn.Module:
    """Train and write ``out`` (a ``.safetensors`` model file); returns the network (eval).

    ``data``: a sampler ``sample(n, generator) -> (x, target)`` (default: the dataset named
    ``config.data``); ``loss(logits, target)``: default cross-entropy on class labels.
    """
    data = get_dataset(config.data) if data is None else data
    torch.manual_seed(config.seed)
    net = build_network(config.network)
    schedule = get_schedule(config.schedule)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config.steps)
    gen = torch.Generator().manual_seed(config.seed + 1)
    start = time.perf_counter()
    for step in range(1, config.steps + 1):
        x0, y = data.sample(config.batch_size, gen)
        noise = torch.randn(x0.shape, generator=gen)
        if config.noisy:
            t = torch.rand(len(x0), generator=gen)
            logits = net(q_sample(x0, t, schedule, noise), t)
        else:
            logits = net(x0 + config.augment_noise * noise)
        value = loss(logits, y)
        if not math.isfinite(value.item()):
            raise FloatingPointError(f"classifier loss is {value.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        sched.step()
        if progress is not None:
            progress(step, value.item())
    meta = {"kind": "classifier", "network": config.network, "schedule": config.schedule,
            "noisy": config.noisy, "event_shape": list(data.event_shape),
            "train": config.to_dict(), "step": config.steps,
            "seconds": round(time.perf_counter() - start, 1)}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_model_file(Path(out), net.state_dict(), meta)
    return net.eval().requires_grad_(False)


def load_classifier(path: Path | str) -> tuple[nn.Module, dict]:
    """``(network in eval mode, config)`` from a classifier file."""
    tensors, config = read_model_file(path)
    if config.get("kind") != "classifier":
        raise CheckpointError(f"{path} is not a classifier file (it holds a diffusion model)")
    net = build_network(config["network"])
    try:
        net.load_state_dict(tensors)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not match its architecture ({err})") from None
    return net.eval().requires_grad_(False), config
