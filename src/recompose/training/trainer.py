"""A small, resumable training loop: Adam, EMA weights, atomic checkpoints, JSON-lines log.

Determinism: all randomness (initial weights, data, ``t``, noise) comes from generators seeded
from ``config.seed`` (the data/noise generator's state is checkpointed) and training uses
``config.threads`` threads, so a resumed run equals an uninterrupted one bit for bit and a rerun
reproduces the shipped weights on the same platform. A run may resume with more ``steps`` than
it was started with (train longer): nothing depends on the total (constant learning rate, no
step-dependent schedule), so the result equals a fresh run of the longer length. Nothing
global changes: initial weights are drawn under :func:`torch.random.fork_rng` and the thread
count is restored afterwards.

The checkpoint folder (its files: :mod:`recompose.io`) is written atomically by
:func:`recompose.io.atomic_dir`; ``trainer.json`` holds the step, config and loss history.

**Data-parallel training** (inside a ``torch.distributed`` process group, e.g. ``torchrun``):
every rank draws the *whole* global batch (data, conditions, ``t``, noise) from the same
seeded generator, so the random stream is the single-process one; rank ``r`` of ``P`` computes
the loss on rows ``r·B/P … (r+1)·B/P − 1`` through ``DistributedDataParallel``, which averages
the gradients over the ranks (the loss module, :class:`_Objective`, is what DDP wraps; an
energy model's loss differentiates through ``∇ₓU`` inside it, and the final backward still
reaches every parameter once, as DDP requires). The average of the ``P`` slice means is the
global batch mean, so the loss curve is the single-process one up to floating-point reduction
order. Rank 0 alone writes checkpoints; all
ranks hold the same state, so a checkpoint resumes under any world size.
"""

from __future__ import annotations

import copy
import json
import math
import pickle
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from .. import distributed
from ..config import TrainConfig
from ..data import dataset_event_shape, get_dataset
from ..errors import first_line
from ..io import CheckpointError, atomic_dir, atomic_write_text, read_model_file, save_model_file
from ..models.base import DiffusionModel
from ..models.loading import build_model
from ..utils import append_dims
from .distill import check_teacher, distillation_terms, load_teacher, teacher_config
from .losses import dsm_terms, noised

__all__ = ["Trainer", "EXPLOSION", "distill_energy", "check_config"]

EXPLOSION = 100.0  # a loss this many times its initial level stops training as diverged


def _model_config(config: TrainConfig, event_shape: tuple[int, ...]) -> dict:
    return {"network": config.network, "parameterization": config.parameterization,
            "energy_form": config.energy_form, "prediction": config.prediction,
            "schedule": config.schedule, "event_shape": list(event_shape), "name": config.data}


def check_config(config: TrainConfig) -> None:
    """Raise a one-line ``ValueError`` unless ``config``'s schedule and network build and the
    network maps its data's shape to itself: checked on torch's ``meta`` device (no memory,
    no data, no work), so that a bad ``schedule`` or ``network`` entry fails before training."""
    from ..schedules import get_schedule

    def fail(what: str, err: BaseException) -> ValueError:
        text = f"missing entry {err}" if isinstance(err, KeyError) else first_line(err)
        return ValueError(f"{what}: {text}")

    try:
        get_schedule(config.schedule)
    except Exception as err:  # noqa: BLE001 - any failure here is the config's
        raise fail(f"schedule {config.schedule}", err) from None
    shape = dataset_event_shape(config.data)
    with torch.device("meta"):
        try:
            model = build_model(_model_config(config, shape))
        except Exception as err:  # noqa: BLE001
            raise fail(f"network {config.network}", err) from None
        try:
            out = model.score(torch.zeros((2, *shape)), 0.5)
        except Exception as err:  # noqa: BLE001
            raise fail(f"network {config.network} does not take {config.data!r} data of "
                       f"shape {shape}", err) from None
    if tuple(out.shape[1:]) != shape:
        raise ValueError(f"network {config.network} maps {config.data!r} data of shape "
                         f"{shape} to {tuple(out.shape[1:])}")


class _Objective(torch.nn.Module):
    """Per-sample training loss at given noised inputs: DSM, or distillation with a teacher
    (the module that DistributedDataParallel wraps)."""

    def __init__(self, model: DiffusionModel, teacher: DiffusionModel | None,
                 dsm_weight: float, contrast_weight: float = 0.0) -> None:
        super().__init__()
        self.model, self.teacher, self.dsm_weight = model, teacher, dsm_weight
        self.contrast_weight = contrast_weight

    def forward(self, xt: Tensor, t: Tensor, noise: Tensor, c: Tensor | None,
                c_teacher: Tensor | None, x0: Tensor) -> Tensor:
        if self.teacher is not None:
            return distillation_terms(self.model, self.teacher, xt, t, noise, c, c_teacher,
                                      self.dsm_weight, self.contrast_weight)
        return dsm_terms(self.model, xt, t, noise, c, x0)


class Trainer:
    """State of one training run; :meth:`run` trains to ``config.steps`` with checkpoints."""

    def __init__(self, config: TrainConfig, out: Path | str,
                 teacher: DiffusionModel | None = None) -> None:
        self.config = config
        self.out = Path(out)
        self.data = get_dataset(config.data)
        # Initial weights come from the global CPU generator (the nn.Module initialisers);
        # seed it inside fork_rng so the caller's random state is left as it was.
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(config.seed)
            self.model = build_model(self._model_config())
        if config.init_from is not None:
            self._load_initial_weights(config.init_from)
        self.teacher = None
        if config.distill_from is not None:  # energy distillation (see .distill)
            self.teacher = teacher if teacher is not None else load_teacher(config.distill_from)
            check_teacher(self.model, self.teacher)
            if config.contrast_weight and not self.model.conditional:
                raise ValueError("contrast_weight compares a condition with the null one: it "
                                 f"needs conditional data, and {config.data!r} has none")
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self._objective: torch.nn.Module | None = None  # built at the first step
        self.opt = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.gen = torch.Generator().manual_seed(config.seed + 1)
        self.step = 0
        self.losses: list[float] = []

    def _load_initial_weights(self, path: str) -> None:
        """Start from the weights of a model file with this run's network (fine-tuning)."""
        try:
            tensors, _ = read_model_file(Path(path))
            self.model.load_state_dict(tensors)
        except (OSError, ValueError, RuntimeError) as err:
            first = first_line(err)
            raise CheckpointError(f"cannot start from {path}: {first} (init_from needs a model "
                                  "file of the same network and parameterization)") from None

    def _model_config(self) -> dict:
        return _model_config(self.config, self.data.event_shape)

    # ---------------------------------------------------------------- checkpoints
    def save(self) -> None:
        """Atomically replace the checkpoint folder with the current state."""
        meta = {**self._model_config(), "train": self.config.to_dict(), "step": self.step}
        with atomic_dir(self.out / "checkpoint") as tmp:
            save_model_file(tmp / "model.safetensors", self.ema.state_dict(), meta)
            tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
            tensors["rng"] = self.gen.get_state()
            save_file({k: v.contiguous() for k, v in tensors.items()},
                      str(tmp / "trainer.safetensors"))
            torch.save(self.opt.state_dict(), tmp / "optimizer.pt")
            state = {"step": self.step, "config": self.config.to_dict(), "losses": self.losses}
            (tmp / "trainer.json").write_text(json.dumps(state))

    def load(self) -> bool:
        """Resume from the checkpoint folder if one exists; returns whether it did."""
        folder = self.out / "checkpoint"
        if not folder.exists() and (self.out / ".checkpoint.old").exists():
            folder = self.out / ".checkpoint.old"  # interrupted between the two renames
        if not folder.exists():
            return False
        try:
            state = json.loads((folder / "trainer.json").read_text())
            tensors = load_file(str(folder / "trainer.safetensors"))
            ema, _ = read_model_file(folder / "model.safetensors")
            opt_state = torch.load(folder / "optimizer.pt", weights_only=True)
        except (OSError, ValueError, RuntimeError, pickle.UnpicklingError) as err:
            first = first_line(err)
            raise CheckpointError(f"cannot resume from {folder}: {first}") from None
        if not self._same_settings(state["config"]):
            raise CheckpointError(
                f"{folder} was written by a run with different settings; use another run folder "
                "or the same settings"
            )
        if state["step"] > self.config.steps:
            raise CheckpointError(
                f"{folder} is at step {state['step']}, past the requested {self.config.steps} "
                "steps; ask for at least that many or use another run folder"
            )
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items()
                                    if k.startswith("model.")})
        self.ema.load_state_dict(ema)
        self.opt.load_state_dict(opt_state)
        self.gen.set_state(tensors["rng"])
        self.step = state["step"]
        self.losses = state["losses"]
        return True

    def _same_settings(self, saved: dict) -> bool:
        """Whether a checkpoint's config is this one but for ``steps`` (entries added to the
        config since it was written take their defaults)."""
        try:
            return replace(TrainConfig(**saved), steps=self.config.steps) == self.config
        except (TypeError, ValueError):  # an entry this version does not know
            return False

    # ---------------------------------------------------------------- training
    def _conditions(self, raw: object, n: int) -> tuple[Tensor | None, Tensor | None]:
        """Encoded conditions for the model and the teacher (``None`` when unconditional),
        with one condition-dropout mask for both: dropped rows get the null condition."""
        if not self.model.conditional:
            return None, None
        nets = [self.model.net] + ([self.teacher.net] if self.teacher is not None else [])
        drop = None
        if self.config.label_dropout > 0:
            drop = torch.rand(n, generator=self.gen) < self.config.label_dropout
        out = []
        for net in nets:
            c = net.encode_condition(raw)
            if drop is not None:
                c = torch.where(append_dims(drop, c.ndim), net.null_condition(n), c)
            out.append(c)
        return out[0], (out[1] if len(out) > 1 else None)

    def train_step(self) -> float:
        """One optimiser step on a fresh batch (this rank's rows under DDP), then the EMA update;
        returns the batch's mean loss (averaged over the ranks)."""
        batch = self.data.sample(self.config.batch_size, self.gen)
        x0, raw = batch if isinstance(batch, tuple) else (batch, None)
        c, c_teacher = self._conditions(raw, len(x0)) if raw is not None else (None, None)
        xt, t, noise = noised(x0, self.model, self.gen)  # the whole batch's randomness
        rows = self._rows(len(x0))  # this rank's share (all rows in one process)
        sliced = [None if v is None else v[rows] for v in (c, c_teacher)]
        loss = self.objective(xt[rows], t[rows], noise[rows], *sliced, x0[rows]).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()  # under DDP: gradients averaged over the ranks
        value = self._all_reduce_mean(loss.detach()).item()
        if not math.isfinite(value):
            raise FloatingPointError(f"training loss is {value} at step {self.step}: the "
                                     f"learning rate ({self.config.lr:g}) is likely too high")
        self.opt.step()
        self.step += 1
        # EMA with warm-up so the random initial weights do not linger (0.999^4000 ≈ 1.8 %).
        decay = min(self.config.ema_decay, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            for pe, p in zip(self.ema.parameters(), self.model.parameters()):
                pe.lerp_(p, 1 - decay)
        return value

    @property
    def objective(self) -> torch.nn.Module:
        """The loss module, wrapped in DistributedDataParallel inside a process group."""
        if self._objective is None:
            objective = _Objective(self.model, self.teacher, self.config.dsm_weight,
                                   self.config.contrast_weight)
            if distributed.world_size() > 1:
                if self.teacher is not None:
                    self.teacher.requires_grad_(False)
                objective = torch.nn.parallel.DistributedDataParallel(objective)
            self._objective = objective
        return self._objective

    @property
    def world(self) -> int:
        """The number of training processes (1 without ``torch.distributed``)."""
        return distributed.world_size()

    def _rows(self, n: int) -> slice:
        """This rank's rows of a global batch of ``n`` (see the module docstring)."""
        world, rank = self.world, distributed.rank()
        if n % world:
            raise ValueError(f"batch_size {n} must be divisible by the number of processes "
                             f"({world}) for data-parallel training")
        share = n // world
        return slice(rank * share, (rank + 1) * share)

    def _all_reduce_mean(self, value: Tensor) -> Tensor:
        if self.world == 1:
            return value
        value = value.clone()
        torch.distributed.all_reduce(value)
        return value / self.world

    def _check_not_exploding(self) -> None:
        """Stop a diverging run: a loss 100× the first one (at the initial weights) means the
        optimiser left the basin; a well-behaved DSM loss falls from its initial level."""
        start = self.losses[0]
        if len(self.losses) > 1 and self.losses[-1] > EXPLOSION * start:
            raise FloatingPointError(
                f"training diverged: loss {self.losses[-1]:.3g} at step {self.step} is over "
                f"{EXPLOSION:g}× its initial level ({start:.3g}); the learning rate "
                f"({self.config.lr:g}) is likely too high")

    def run(self, stop_at: int | None = None,
            progress: Callable[[int, float], None] | None = None,
            on_checkpoint: Callable[[Trainer], None] | None = None) -> DiffusionModel:
        """Train to ``config.steps`` (or ``stop_at``), checkpointing every
        ``config.checkpoint_every`` steps and always after the last step; ``config.threads``
        threads while training (the caller's count is restored on return).
        ``on_checkpoint(trainer)`` runs after each checkpoint is written (rank 0 only), e.g.
        to plot the loss so far."""
        end = min(self.config.steps, stop_at or self.config.steps)
        start = time.perf_counter()
        threads = torch.get_num_threads()
        torch.set_num_threads(self.config.threads)
        try:
            while self.step < end:
                loss = self.train_step()
                self.losses.append(loss)
                self._check_not_exploding()
                if progress is not None:
                    progress(self.step, loss)
                if self.step % self.config.checkpoint_every == 0 or self.step == end:
                    if distributed.rank() == 0:  # all ranks hold the same state
                        self.save()
                        if on_checkpoint is not None:
                            on_checkpoint(self)
        finally:
            torch.set_num_threads(threads)
        if distributed.rank() == 0:
            atomic_write_text(self.out / "config.json", self.config.to_json())
        if distributed.active():
            torch.distributed.barrier()  # the checkpoint is on disk before any rank returns
        self.elapsed = time.perf_counter() - start
        return self.ema


def distill_energy(teacher: str, out: Path | str, config: TrainConfig | None = None,
                   progress: bool = False, **overrides: object) -> DiffusionModel:
    """Train (or resume) an energy model distilled from ``teacher`` in the run folder ``out``.

    Args:
        teacher: a shipped model (``"ring"``, ``"clevr"``, ``"digits:score"``, …) or a model
            file; its own training config gives the student's defaults.
        out: run folder; ``out/checkpoint/model.safetensors`` is the student (EMA weights).
        config: the full student config instead of the teacher's defaults.
        progress: show a progress bar.
        **overrides: entries of :class:`~recompose.config.TrainConfig`, e.g. ``steps=2000``.

    Returns:
        The trained student (EMA weights), an energy model in eval mode.
    """
    if config is None:
        config = teacher_config(teacher, **overrides)
    else:
        config = replace(config, distill_from=teacher, **overrides)
    trainer = Trainer(config, out)
    trainer.load()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, initial=trainer.step, desc=f"distill {teacher}")
    trainer.run(progress=None if bar is None else (lambda step, loss: bar.update(1)))
    if bar is not None:
        bar.close()
    return trainer.ema.eval().requires_grad_(False)
