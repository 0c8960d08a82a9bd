"""Validation at the boundary: bad files, names and shapes fail early, in one line."""

import re

import pytest

import recompose as rc
from recompose.io import CheckpointError, read_model_file, save_model_file
from recompose.models.loading import load_model, shipped_path


@pytest.mark.parametrize("shape", [[3], [4], [1, 8, 8]])
def test_a_model_file_whose_network_does_not_fit_its_event_shape_fails_at_load(tmp_path, shape):
    tensors, config = read_model_file(shipped_path("ring-score"))
    save_model_file(tmp_path / "bad.safetensors", tensors, {**config, "event_shape": shape})
    with pytest.raises(CheckpointError, match="event shape") as err:
        load_model(tmp_path / "bad.safetensors")
    assert "\n" not in str(err.value)


def test_unknown_pretrained_names_say_what_exists():
    with pytest.raises(ValueError, match="unknown pretrained model 'rings'; choose one of ring"):
        rc.pretrained("rings")


@pytest.mark.parametrize("shape", [(3, 3), (3, 2, 1), (2,)])
def test_wrong_shaped_inputs_get_one_line_naming_the_model(shape):
    import torch

    for model in (rc.pretrained("ring"), rc.pretrained("ring", "score"),
                  rc.GaussianMixture([[0.0, 0.0]], 0.1, name="g"),
                  rc.pretrained("ring") * rc.pretrained("bar")):
        for call in (model.score, model.energy) if model.has_energy else (model.score,):
            with pytest.raises(ValueError, match=r"takes x of shape \(B, 2\), got "
                                                 + re.escape(str(shape))):
                call(torch.zeros(shape), 0.5)
