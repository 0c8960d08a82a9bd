"""Checkpoints and run folders — the only module (with the CLI) that touches the disk.

A *model file* is one ``.safetensors`` file: the (EMA) weights plus, in its header metadata
under ``"recompose"``, a JSON config (network, parameterisation, schedule, data, training
settings). Loading builds the network from that config and never executes code (no pickle).

A *training checkpoint* is a folder holding ``model.safetensors`` (as above, EMA weights),
``trainer.safetensors`` (raw weights, RNG state), ``optimizer.pt`` (the optimizer's
``state_dict``, read with ``torch.load(weights_only=True)``) and ``trainer.json``.
Every write goes to a temporary sibling and is moved into place with ``os.replace``, so an
interrupted write never leaves a half-written checkpoint.

A *run folder* (``--out`` of the command line, the experiments' outputs) may be shared with the
user's own files, so :class:`run_folder` never deletes what recompose did not write: a run
records the entries it wrote in ``.recompose-run.json``; a later run into the same folder needs
``overwrite=True``, is refused where no such record exists (a folder of someone else's files),
and replaces only the recorded entries. Outputs are assembled in a hidden ``.recompose-tmp-*``
folder inside the run folder and moved in when complete; a killed run's leftover is removed by
the next run into the same place. :func:`check_run_folder` says all this before any work.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from .errors import first_line

__all__ = [
    "CheckpointError",
    "save_model_file",
    "read_model_file",
    "atomic_write",
    "atomic_write_text",
    "atomic_dir",
    "RunFolderError",
    "RUN_RECORD",
    "check_run_folder",
    "run_folder",
]

FORMAT = "recompose-model-v1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, corrupt, or for another architecture."""


def atomic_write(path: Path | str, write: Callable[[str], None]) -> None:
    """``write(tmp)`` to a temporary file in ``path``'s folder, then rename it to ``path``; on
    any failure the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


def save_model_file(path: Path, tensors: dict[str, Tensor], config: dict) -> None:
    """Atomically write weights + JSON config to one ``.safetensors`` file."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {"format": FORMAT, "recompose": json.dumps(config, sort_keys=True)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


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
        first = first_line(err)
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


RUN_RECORD = ".recompose-run.json"
_TMP_PREFIX = ".recompose-tmp-"


class RunFolderError(ValueError):
    """An output folder that cannot be used: not writable, or holding files we did not write."""


def _recorded(folder: Path) -> list[str] | None:
    """The entries a previous run wrote into ``folder``, or None if it holds no run record."""
    try:
        return list(json.loads((folder / RUN_RECORD).read_text())["entries"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_run_folder(out: Path | str, overwrite: bool = False) -> Path:
    """Check before any work that ``out`` can receive a run's outputs; return it resolved.

    Raises :class:`RunFolderError` if ``out`` is not a creatable, writable folder, if it holds
    files and ``overwrite`` is False, or if ``overwrite`` is True but the folder's files are not
    a previous recompose run (then nothing would be safe to replace).
    """
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"{out} is a file, not a folder; choose another output folder")
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise RunFolderError(f"cannot create {out}: {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RunFolderError(f"cannot write to {out}: {probe} is not writable")
    if not out.exists():
        return out
    present = [p.name for p in out.iterdir() if not p.name.startswith(_TMP_PREFIX)]
    if not present:
        return out
    if not overwrite:
        raise RunFolderError(f"{out} is not empty; allow overwriting (--overwrite) to replace "
                             "a previous recompose run there, or choose another output folder")
    if _recorded(out) is None:
        raise RunFolderError(f"{out} holds files that recompose did not write (no {RUN_RECORD}"
                             "); it will not replace them: choose another output folder")
    return out


class run_folder:  # noqa: N801 - used as a context manager, reads like a function
    """``with run_folder(out, overwrite) as tmp:`` write the outputs into ``tmp``.

    On success they replace the previous run's recorded entries in ``out`` (files the user put
    there are untouched) and the record lists the new entries; on an exception nothing in
    ``out`` changes and ``tmp`` is removed.
    """

    def __init__(self, out: Path | str, overwrite: bool = False) -> None:
        self.out = check_run_folder(out, overwrite)

    def __enter__(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        for stale in self.out.glob(_TMP_PREFIX + "*"):  # a killed run's leftovers
            shutil.rmtree(stale, ignore_errors=True)
        self.tmp = Path(tempfile.mkdtemp(dir=self.out, prefix=_TMP_PREFIX))
        return self.tmp

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        entries = sorted(p.name for p in self.tmp.iterdir())
        recorded = _recorded(self.out) or []
        clash = [n for n in entries if (self.out / n).exists() and n not in recorded]
        if clash:  # a file of the user's where an output goes: keep both, say where
            kept = self.out / f"recompose-outputs-{self.tmp.name[len(_TMP_PREFIX):]}"
            os.replace(self.tmp, kept)
            raise RunFolderError(f"{self.out / clash[0]} was not written by recompose and is "
                                 f"kept; this run's outputs are in {kept}")
        try:
            for name in recorded:  # the previous run's outputs only
                old = self.out / name
                if old.is_dir() and not old.is_symlink():
                    shutil.rmtree(old)
                else:
                    old.unlink(missing_ok=True)
            for name in entries:
                os.replace(self.tmp / name, self.out / name)
            atomic_write_text(self.out / RUN_RECORD, json.dumps({"entries": entries}))
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
