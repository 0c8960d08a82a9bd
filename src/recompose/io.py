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
records every file it wrote, with its size and sha256, in ``.recompose-run.json``; a later run
into the same folder needs ``overwrite=True``, is refused where no such record exists (a folder
of someone else's files) or where the record cannot be trusted (an entry outside the folder, a
symbolic link on an entry's path), and replaces only recorded files whose contents are
unchanged. Outputs are assembled in a hidden ``.recompose-tmp-*`` folder and moved in under a
journal (a *pending* record first), so an error leaves the folder as it was and a killed run is
undone by the next one. :func:`check_run_folder` says all this before any work; the exact
guarantees are in :class:`run_folder`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
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
    "json_safe",
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


def json_safe(obj: object, _path: str = "") -> tuple[object, list[str]]:
    """``(copy, replaced)``: ``obj`` with every non-finite float (NaN, ±inf; Python, NumPy or
    0-d tensor scalars) replaced by ``None``, recursively through dicts, lists and tuples
    (tuples become lists), so that ``json.dumps(copy, allow_nan=False)`` succeeds; ``replaced``
    lists where, as paths like ``"sampling/step_size/3"``, so a caller can write the reason
    beside the ``null``. Other values are returned as they are."""
    if isinstance(obj, dict):
        out, replaced = {}, []
        for key, value in obj.items():
            out[key], sub = json_safe(value, f"{_path}/{key}" if _path else str(key))
            replaced += sub
        return out, replaced
    if isinstance(obj, (list, tuple)):
        items = [json_safe(v, f"{_path}/{i}" if _path else str(i)) for i, v in enumerate(obj)]
        return [v for v, _ in items], [p for _, sub in items for p in sub]
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # NumPy / torch scalars
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None, [_path]
    return obj, []


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
_RECORD_FORMAT = "recompose-run-v2"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_WHAT_TO_DO = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space",
               errno.EACCES: "make it writable", errno.EPERM: "make it writable",
               errno.EROFS: "choose a writable output folder"}


class RunFolderError(ValueError):
    """An output folder that cannot be used (not writable, holding files we did not write, a run
    record that cannot be trusted), or outputs that could not be moved in."""


@dataclass
class _Record:
    """A checked run record: ``files`` maps each file a run wrote (a plain relative path) to its
    ``{"size", "sha256"}`` (None in an old record, which has no hashes), ``dirs`` are the
    folders it created; ``pending`` is set while a run moves its outputs in: ``journal`` (the
    hidden folder holding the previous files), ``had_record``, and the new ``files`` / ``dirs``."""

    files: dict[str, dict | None]
    dirs: list[str]
    pending: dict | None = None


def _is_plain(entry: object) -> bool:
    """A relative path of plain names (``a/b.png``): no ``..``, ``.``, empty parts, leading
    ``/``, backslashes, NULs, and nothing in recompose's own names."""
    if not isinstance(entry, str) or not entry or "\\" in entry or "\0" in entry:
        return False
    parts = entry.split("/")
    return (all(p not in ("", ".", "..") for p in parts) and parts[0] != RUN_RECORD
            and not parts[0].startswith(_TMP_PREFIX))


def _kind(root: Path, rel: str) -> tuple[str, Path]:
    """What ``root/rel`` is, never following a link: ``"absent"``, ``"file"`` (regular),
    ``"dir"``, ``"other"``, or ``"link"`` when it or a folder between it and ``root`` is a
    symbolic link (returned beside the kind)."""
    path = root
    parts = rel.split("/")
    for i, part in enumerate(parts):
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return "absent", path
        if stat.S_ISLNK(mode):
            return "link", path
        if i < len(parts) - 1 and not stat.S_ISDIR(mode):
            return "absent", path  # a file where a folder would be: nothing below it
    if stat.S_ISREG(mode):
        return "file", path
    return ("dir" if stat.S_ISDIR(mode) else "other"), path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _describe(path: Path) -> dict:
    return {"size": os.lstat(path).st_size, "sha256": _sha256(path)}


def _matches(root: Path, rel: str, meta: dict | None) -> bool:
    """Whether ``root/rel`` is a regular file with the recorded size and hash (any regular file
    for an old record's ``None``)."""
    if _kind(root, rel)[0] != "file":
        return False
    if meta is None:
        return True
    path = root / rel
    try:
        return os.lstat(path).st_size == meta["size"] and _sha256(path) == meta["sha256"]
    except OSError:  # unreadable: not provably ours, so left alone
        return False


def _untrusted(record: Path, why: str) -> RunFolderError:
    return RunFolderError(f"{record} {why}; recompose will not replace anything in "
                          f"{record.parent}: delete the outputs yourself or choose another "
                          "output folder")


def _entry(record: Path, entry: object) -> str:
    if not _is_plain(entry):
        shown = repr(entry) if len(repr(entry)) <= 80 else repr(entry)[:77] + "..."
        raise _untrusted(record, f"lists {shown}, which is not a plain relative path inside "
                                 "the folder")
    return entry  # type: ignore[return-value]


def _files(record: Path, value: object) -> dict[str, dict]:
    if not isinstance(value, dict):
        raise _untrusted(record, "is not a valid run record")
    files = {}
    for rel, meta in value.items():
        _entry(record, rel)
        if not (isinstance(meta, dict) and type(meta.get("size")) is int and meta["size"] >= 0
                and isinstance(meta.get("sha256"), str) and _SHA256.fullmatch(meta["sha256"])):
            raise _untrusted(record, f"has no valid size and sha256 for {rel!r}")
        files[rel] = {"size": meta["size"], "sha256": meta["sha256"]}
    return files


def _dirs(record: Path, value: object) -> list[str]:
    if not isinstance(value, list):
        raise _untrusted(record, "is not a valid run record")
    return [_entry(record, d) for d in value]


def _read_record(out: Path) -> _Record | None:
    """The checked run record in ``out``, None where there is none; a one-line
    :class:`RunFolderError` where it cannot be trusted (see :class:`run_folder`)."""
    record = out / RUN_RECORD
    kind, _ = _kind(out, RUN_RECORD)
    if kind == "absent":
        return None
    if kind != "file":
        raise _untrusted(record, "is not a regular file")
    try:
        data = json.loads(record.read_text())
    except (OSError, ValueError) as err:
        raise _untrusted(record, f"cannot be read ({first_line(err)})") from None
    if isinstance(data, dict) and "format" not in data and isinstance(data.get("entries"), list):
        # An older recompose's record: top-level names without hashes. Its files are taken as
        # written; its folders may hold the user's files, which cannot be told apart.
        rec = _Record({}, [])
        for name in data["entries"]:
            if "/" in _entry(record, name):
                raise _untrusted(record, f"lists {name!r}, which is not a top-level name")
            kind, path = _kind(out, name)
            if kind == "dir":
                raise RunFolderError(f"{path} is a folder listed by an older recompose's run "
                                     "record, which cannot tell its files from yours; "
                                     "recompose will not delete it: remove it yourself or "
                                     "choose another output folder")
            rec.files[name] = None
    elif isinstance(data, dict) and data.get("format") == _RECORD_FORMAT:
        rec = _Record(_files(record, data.get("files")), _dirs(record, data.get("dirs")))
        pending = data.get("pending")
        if pending is not None:
            journal = pending.get("journal") if isinstance(pending, dict) else None
            if not (isinstance(journal, str) and journal.startswith(_TMP_PREFIX)
                    and not any(c in journal for c in "/\\\0")
                    and isinstance(pending.get("had_record"), bool)):
                raise _untrusted(record, "is not a valid run record")
            rec.pending = {"journal": journal, "had_record": pending["had_record"],
                           "files": _files(record, pending.get("files")),
                           "dirs": _dirs(record, pending.get("dirs"))}
    else:
        raise _untrusted(record, "is not a run record of this version of recompose")
    listed = [*rec.files, *rec.dirs]
    if rec.pending is not None:
        listed += [*rec.pending["files"], *rec.pending["dirs"], rec.pending["journal"]]
    for rel in listed:
        kind, path = _kind(out, rel)
        if kind == "link":
            raise RunFolderError(f"{path} is a symbolic link on the path of {rel!r}, listed in "
                                 f"{record}; recompose does not follow links in a run folder: "
                                 "remove the link or choose another output folder")
    return rec


def check_run_folder(out: Path | str, overwrite: bool = False) -> Path:
    """Check before any work that ``out`` can receive a run's outputs; return it resolved.

    Raises :class:`RunFolderError` if ``out`` is not a creatable, writable folder, if it holds
    files and ``overwrite`` is False, or if ``overwrite`` is True but the folder's files are not
    a previous recompose run or its run record cannot be trusted (see :class:`run_folder`).
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
    if _read_record(out) is None:
        raise RunFolderError(f"{out} holds files that recompose did not write (no {RUN_RECORD}"
                             "); it will not replace them: choose another output folder")
    return out


def _outputs(tmp: Path) -> tuple[dict[str, dict], list[str]]:
    """The files (with size and hash) and folders a run wrote into ``tmp``, parents first."""
    files, dirs = {}, []
    for root, dirnames, filenames in os.walk(tmp):
        for name in sorted(dirnames + filenames):
            path = Path(root) / name
            rel = path.relative_to(tmp).as_posix()
            mode = os.lstat(path).st_mode
            if not _is_plain(rel) or not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise RunFolderError(f"{path}: a run's outputs must be regular files and "
                                     "folders with plain names")
            if stat.S_ISDIR(mode):
                dirs.append(rel)
            else:
                files[rel] = _describe(path)
    return files, sorted(dirs, key=lambda d: d.count("/"))


def _write_json(path: Path, data: dict) -> None:
    with open(path, "x") as f:
        f.write(json.dumps(data, indent=1, sort_keys=True))
        f.flush()
        os.fsync(f.fileno())


def _failed(path: Path, err: OSError, out: Path, restored: bool) -> str:
    state = (f"{out} is as it was" if restored else
             f"the next run into {out} (with --overwrite) restores its previous outputs")
    return (f"cannot write {path}: {err.strerror or first_line(err)}; {state}: "
            f"{_WHAT_TO_DO.get(err.errno, 'fix that')} and rerun")


def _roll_back(out: Path, old_files: dict, old_dirs: list[str], pending: dict
               ) -> list[tuple[Path, OSError]]:
    """Undo a run's move into ``out`` that was cut short, from its pending record: the new files
    (those still matching their hash) go, the previous ones come back from the journal, the
    previous record is put back. Touches only files matching a recorded hash; safe to repeat.
    Returns what failed (the pending record stays, so the next run tries again)."""
    journal = pending["journal"]
    failed: list[tuple[Path, OSError]] = []

    def attempt(path: Path, action: Callable[[], object]) -> None:
        try:
            action()
        except OSError as err:
            failed.append((path, err))

    def saved(rel: str) -> bool:
        return _matches(out, f"{journal}/old/{rel}", old_files[rel])

    for rel, meta in pending["files"].items():
        if rel in old_files and _matches(out, rel, old_files[rel]):
            continue  # the previous file, still (or again) in place
        if not _matches(out, rel, meta):
            continue  # never moved in, or not ours
        if rel in old_files and saved(rel):
            attempt(out / rel, lambda r=rel: os.replace(out / journal / "old" / r, out / r))
        else:
            attempt(out / rel, lambda r=rel: os.unlink(out / r))
    for d in sorted(pending["dirs"], key=lambda d: d.count("/"), reverse=True):
        if _kind(out, d)[0] == "dir":
            with contextlib.suppress(OSError):  # not empty: someone else's files are in it
                os.rmdir(out / d)
    for rel in old_files:
        if not saved(rel) or _kind(out, rel)[0] != "absent":
            continue  # already back, or something else is there now (left alone)
        parents = rel.split("/")[:-1]
        for i in range(len(parents)):
            folder = "/".join(parents[:i + 1])
            kind, path = _kind(out, folder)
            if kind == "absent":
                attempt(path, lambda p=path: os.mkdir(p))
            elif kind != "dir":
                break
        else:
            attempt(out / rel, lambda r=rel: os.replace(out / journal / "old" / r, out / r))
    if failed:
        return failed
    record = out / RUN_RECORD
    if _kind(out, f"{journal}/record.old")[0] == "file":
        attempt(record, lambda: os.replace(out / journal / "record.old", record))
    elif pending["had_record"]:
        attempt(record, lambda: atomic_write_text(record, json.dumps(
            {"format": _RECORD_FORMAT, "files": old_files, "dirs": old_dirs}, indent=1)))
    else:
        attempt(record, lambda: record.unlink(missing_ok=True))
    if not failed:
        shutil.rmtree(out / journal, ignore_errors=True)
    return failed


class run_folder:  # noqa: N801 - used as a context manager, reads like a function
    """``with run_folder(out, overwrite) as tmp:`` write the outputs into ``tmp``; on success
    they are moved into ``out``, on an exception nothing in ``out`` changes and ``tmp`` is
    removed.

    What is guaranteed:

    * ``out/.recompose-run.json`` lists every file a run wrote (relative path, size, sha256)
      and the folders it created. A later run needs ``overwrite=True`` and replaces or removes
      only listed files that still have their recorded size and hash; files recompose did not
      write, and listed files changed since, are never touched (one in the way of a new output:
      the outputs are kept in ``out/recompose-outputs-*`` and an error says so). A folder is
      removed only when recompose created it and it is empty.
    * Nothing listed is followed: a record entry that is not a plain relative path inside
      ``out`` (absolute, ``..``, empty parts, backslashes, not a string) or with a symbolic
      link on its path is refused before any work, and nothing is changed.
    * The move is journaled: the record is first replaced (atomically) by a *pending* one that
      lists the previous and the new files; the previous files are moved into a hidden journal
      folder, the new ones moved in, and the final record moved into place. An error on the way
      (disk full, permissions) undoes it: the folder and record are as they were, and the
      error names the path. A killed run leaves the pending record, and the next run into
      ``out`` undoes the move first (touching only files that match a recorded hash).
    * Names starting with ``.recompose-tmp-`` are recompose's scratch space: leftovers of a
      killed run are removed by the next run into the same place.
    * Records written before hashes were recorded (a list of top-level names) are still read:
      the top-level regular files they list are replaced without a content check; a folder they
      list is refused (its files cannot be told from the user's).
    """

    def __init__(self, out: Path | str, overwrite: bool = False) -> None:
        self.out = check_run_folder(out, overwrite)

    def __enter__(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        record = _read_record(self.out)
        if record is not None and record.pending is not None:  # a run killed while moving in
            failed = _roll_back(self.out, record.files, record.dirs, record.pending)
            if failed:
                path, err = failed[0]
                raise RunFolderError(
                    f"cannot restore {path} after an interrupted run into {self.out}: "
                    f"{err.strerror or first_line(err)}; "
                    f"{_WHAT_TO_DO.get(err.errno, 'fix that')} and rerun")
        for stale in self.out.glob(_TMP_PREFIX + "*"):  # a killed run's leftovers
            if _kind(self.out, stale.name)[0] == "dir":
                shutil.rmtree(stale, ignore_errors=True)
        self.tmp = Path(tempfile.mkdtemp(dir=self.out, prefix=_TMP_PREFIX))
        return self.tmp

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None:
                self._commit()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _keep(self, why: str) -> RunFolderError:
        """Keep the outputs beside the user's files (where they cannot go in) and say where."""
        kept = self.out / f"recompose-outputs-{self.tmp.name[len(_TMP_PREFIX):]}"
        os.replace(self.tmp, kept)
        return RunFolderError(f"{why}; this run's outputs are in {kept}")

    def _commit(self) -> None:
        out, tmp = self.out, self.tmp
        new_files, new_dirs = _outputs(tmp)
        try:
            record = _read_record(out)
        except RunFolderError as err:
            raise self._keep(str(err)) from None
        if record is not None and record.pending is not None:
            raise self._keep(f"another run is moving its outputs into {out}")
        old_files, old_dirs = (record.files, record.dirs) if record else ({}, [])
        ours = {}  # the previous run's files still as it wrote them
        for rel, meta in old_files.items():
            if _matches(out, rel, meta):
                try:  # an old record has no hashes: take the file as it is
                    ours[rel] = meta if meta is not None else _describe(out / rel)
                except OSError:
                    pass  # unreadable: left alone
        for rel in [*new_dirs, *new_files]:
            kind, path = _kind(out, rel)
            if not (kind == "absent" or rel in ours or (kind == "dir" and rel in new_dirs)):
                raise self._keep(f"{path} was not written by recompose (or was changed since) "
                                 "and is kept")
        created = [d for d in new_dirs if _kind(out, d)[0] != "dir"]
        final = {"format": _RECORD_FORMAT, "files": new_files,
                 "dirs": [d for d in new_dirs if d in created or d in old_dirs]}
        pending = {"journal": "", "had_record": record is not None, "files": new_files,
                   "dirs": created}

        journal, at = None, out
        try:  # everything that needs space, before anything in out changes
            journal = Path(tempfile.mkdtemp(dir=out, prefix=_TMP_PREFIX + "journal-"))
            pending["journal"] = journal.name
            for rel in ours:
                (journal / "old" / rel).parent.mkdir(parents=True, exist_ok=True)
            at = out / RUN_RECORD
            if record is not None:
                try:
                    os.link(at, journal / "record.old")
                except OSError:  # a file system without hard links
                    shutil.copy2(at, journal / "record.old")
            _write_json(journal / "record.pending",
                        {"format": _RECORD_FORMAT, "files": ours, "dirs": old_dirs,
                         "pending": pending})
            _write_json(journal / "record.final", final)
        except BaseException as err:
            if journal is not None:
                shutil.rmtree(journal, ignore_errors=True)
            if isinstance(err, OSError):
                raise RunFolderError(_failed(at, err, out, restored=True)) from None
            raise

        try:  # renames (and new folders) only; from here a killed run is undone by the next
            at = out / RUN_RECORD
            os.replace(journal / "record.pending", at)
            for rel in ours:
                at = out / rel
                os.replace(at, journal / "old" / rel)
            for rel in created:
                at = out / rel
                os.mkdir(at)
            for rel in new_files:
                at = out / rel
                os.replace(tmp / rel, at)
            at = out / RUN_RECORD
            os.replace(journal / "record.final", at)
        except BaseException as err:
            restored = not _roll_back(out, ours, old_dirs, pending)
            if isinstance(err, OSError):
                raise RunFolderError(_failed(at, err, out, restored)) from None
            raise

        for d in sorted(set(old_dirs) - set(final["dirs"]), key=lambda d: d.count("/"),
                        reverse=True):
            if _kind(out, d)[0] == "dir":
                with contextlib.suppress(OSError):  # not empty: the user's files are in it
                    os.rmdir(out / d)
        shutil.rmtree(journal, ignore_errors=True)
