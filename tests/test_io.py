"""Atomic writes: an interrupted write leaves the previous file (or folder) as it was and
no temporary file behind."""

import json
import math
import os

import numpy as np
import pytest
import torch

import recompose.io as rio
from recompose.io import atomic_dir, atomic_write_text, read_model_file, save_model_file


class Boom(Exception):
    pass


def _fail(*args, **kwargs):
    raise Boom("simulated crash")


def test_atomic_write_text_replaces_and_leaves_nothing_else(tmp_path):
    path = tmp_path / "sub" / "a.json"
    atomic_write_text(path, "old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.json"]


@pytest.mark.parametrize("where", ["fsync", "replace"])
def test_interrupted_atomic_write_text_keeps_the_old_file(tmp_path, monkeypatch, where):
    path = tmp_path / "a.json"
    atomic_write_text(path, "old")
    monkeypatch.setattr(rio.os, where, _fail)
    with pytest.raises(Boom):
        atomic_write_text(path, "new contents")
    monkeypatch.undo()
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_interrupted_model_file_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    save_model_file(path, {"w": torch.ones(3)}, {"v": 1})

    def half_written(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x00" * 10)
        raise Boom("simulated crash mid-write")

    monkeypatch.setattr(rio, "save_file", half_written)
    with pytest.raises(Boom):
        save_model_file(path, {"w": torch.zeros(3)}, {"v": 2})
    monkeypatch.undo()
    tensors, config = read_model_file(path)
    assert torch.equal(tensors["w"], torch.ones(3)) and config == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def _make(folder, text):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "f.txt").write_text(text)


def test_atomic_dir_swaps_in_the_new_folder(tmp_path):
    out = tmp_path / "run"
    with atomic_dir(out) as tmp:
        _make(tmp, "one")
    with atomic_dir(out) as tmp:
        _make(tmp, "two")
        assert (out / "f.txt").read_text() == "one"  # untouched until the block succeeds
    assert (out / "f.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_exception_inside_atomic_dir_keeps_the_old_folder(tmp_path):
    out = tmp_path / "run"
    with atomic_dir(out) as tmp:
        _make(tmp, "old")
    with pytest.raises(Boom), atomic_dir(out) as tmp:
        _make(tmp, "new")
        raise Boom
    assert (out / "f.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    with pytest.raises(Boom), atomic_dir(tmp_path / "fresh") as tmp:
        raise Boom
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_failed_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    out = tmp_path / "run"
    with atomic_dir(out) as tmp:
        _make(tmp, "old")
    real = os.replace
    calls = []

    def second_fails(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the old folder is already aside; the new one fails to move in
            raise Boom
        real(src, dst)

    monkeypatch.setattr(rio.os, "replace", second_fails)
    with pytest.raises(Boom), atomic_dir(out) as tmp:
        _make(tmp, "new")
    monkeypatch.undo()
    assert len(calls) == 3  # aside, (failed) swap, back
    assert (out / "f.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_json_safe_nulls_non_finite_values_and_says_where():
    info = {"t": [0.5, 1.0], "step_size": [math.nan, 0.1], "ll": -math.inf,
            "np": np.float32("inf"), "torch": torch.tensor(math.nan), "pair": (1, "a"),
            "ok": 2.5, "flag": True, "none": None}
    safe, replaced = rio.json_safe(info)
    assert replaced == ["step_size/0", "ll", "np", "torch"]
    assert safe == {"t": [0.5, 1.0], "step_size": [None, 0.1], "ll": None, "np": None,
                    "torch": None, "pair": [1, "a"], "ok": 2.5, "flag": True, "none": None}
    json.dumps(safe, allow_nan=False)
    assert math.isnan(info["step_size"][0])  # the input is left as it was
