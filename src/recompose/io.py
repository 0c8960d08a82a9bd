"""Checkpoints and run folders — the only module (with the CLI) that touches the disk.

A *model file* is one ``.safetensors`` file: the (EMA) weights plus, in its header metadata
under ``"recompose"``, a JSON config (network, parameterisation, schedule, data, training
settings). Loading builds the network from that config and never executes code (no pickle).

A *training checkpoint* is a folder holding ``model.safetensors`` (as above, EMA weights),
``trainer.safetensors`` (raw weights, RNG state), ``optimizer.pt`` (the optimizer's
``state_dict``, read with ``torch.load(weights_only=True)``) and ``trainer.json``.
Every write goes to a temporary sibling and is moved into place with ``os.replace``, so an
interrupted write never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

__all__ = [
    "CheckpointError",
    "save_model_file",
    "read_model_file",
    "atomic_write_text",
    "atomic_dir",
]

FORMAT = "recompose-model-v1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, corrupt, or for another architecture."""


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model_file(path: Path, tensors: dict[str, Tensor], config: dict) -> None:
    """Atomically write weights + JSON config to one ``.safetensors`` file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        meta = {"format": FORMAT, "recompose": json.dumps(config, sort_keys=True)}
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_model_file(path: Path | str) -> tuple[dict[str, Tensor], dict]:
    """Read ``(tensors, config)`` from a model file; a one-line :class:`CheckpointError`
    if it cannot be used."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: not a valid safetensors file "
                              f"({first})") from None
    if meta.get("format") != FORMAT or "recompose" not in meta:
        raise CheckpointError(f"{path} is a safetensors file but not a recompose model "
                              "(no recompose config in its header)")
    try:
        config = json.loads(meta["recompose"])
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: its embedded config is not valid JSON") from None
    return tensors, config


class atomic_dir:  # noqa: N801 - used as a context manager, reads like a function
    """Context manager: build a folder's contents in a temporary sibling, then swap it in.

    On an exception inside the block (or during the swap) the previous folder, if any, is
    left as it was and the temporary sibling is removed. Only a crash between the two renames
    of the swap can leave the previous contents under ``.<name>.old`` (readers such as
    :meth:`recompose.training.trainer.Trainer.load` look there)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(dir=self.path.parent, prefix=f".{self.path.name}."))
        return self.tmp

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        old = None
        try:
            if self.path.exists():
                # A folder cannot be replaced in one rename: move the old one aside first.
                old = self.path.with_name(f".{self.path.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(self.path, old)
            os.replace(self.tmp, self.path)
        except BaseException:
            if old is not None and not self.path.exists():
                os.replace(old, self.path)  # put the previous contents back
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
