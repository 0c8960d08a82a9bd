"""The attribute experiment (experiments/attributes.py): captions, checker, shipped pipeline."""

import pytest
import torch

pytest.importorskip("diffusers", reason="the diffusers extra is part of [test]")

from experiments import attributes as A  # noqa: E402


def test_captions_describe_one_object_of_the_scene():
    gen = torch.Generator().manual_seed(0)
    d = A.attribute_scenes(400, gen)
    caps = A.captions(d["colour"], d["shape"], gen, drop=0.0)
    for i, cap in enumerate(caps):
        words = cap.split()
        objects = {(A.COLOUR_NAMES[c], A.SHAPE_NAMES[s])
                   for c, s in zip(d["colour"][i].tolist(), d["shape"][i].tolist()) if c >= 0}
        assert any(all(w in obj for w in words) for obj in objects), (cap, objects)
    kinds = [len(c.split()) for c in caps]
    assert 0.4 < kinds.count(2) / len(kinds) < 0.6  # full descriptions half the time


def test_tokenizer_spells_the_vocabulary_and_the_empty_prompt_is_distinct():
    tok = A.word_tokenizer()
    ids = tok(["red cube", "cube red", ""], padding="max_length", max_length=A.MAX_TOKENS,
              return_tensors="pt").input_ids
    assert tok.convert_ids_to_tokens(ids[0])[1:3] == ["red</w>", "cube</w>"]
    enc = A.text_encoder(len(tok.get_vocab()))
    e = enc(ids).last_hidden_state
    assert not torch.allclose(e[0], e[1]) and not torch.allclose(e[0], e[2])


def test_correct_reads_the_presence_grid():
    grid = torch.zeros(3, 4, 2, dtype=torch.bool)
    grid[0, A.RED, A.CUBE] = grid[0, A.BLUE, A.SPHERE] = True  # red cube + blue sphere
    grid[1, 1, A.CUBE] = True  # a green cube only
    grid[2, A.RED, A.SPHERE] = grid[2, 3, A.CUBE] = True  # a red sphere and a yellow cube
    assert A.correct(grid, "and").tolist() == [True, False, False]
    assert A.correct(grid, "not").tolist() == [False, True, False]
    assert A.correct(grid, "single").tolist() == [True, False, False]


def test_checker_on_held_out_ground_truth_scenes():
    checker = A.load_checker()
    d = A.attribute_scenes(500, torch.Generator().manual_seed(99))
    exact = (checker.present(d["x"]) == d["present"].bool()).flatten(1).all(1)
    assert exact.float().mean() >= 0.98


def test_shipped_pipeline_loads_and_samples():
    import recompose as rc

    model = rc.from_pretrained(A.PIPELINE)
    assert model.event_shape == (3, 16, 16) and model.conditional
    x = rc.sample(A.composition(model, "and"), 4, "reverse", num_levels=5, seed=0,
                  clip=(-1.0, 1.0)).x
    assert x.shape == (4, 3, 16, 16) and torch.isfinite(x).all()


def test_second_checker_is_another_network_and_as_accurate():
    """§16 grades with a checker of another architecture and seed; both get held-out
    ground-truth scenes right, and on noise-free scenes they agree."""
    reward, second = A.load_checker("reward"), A.load_checker("eval")
    assert type(reward) is not type(second)
    d = A.attribute_scenes(500, torch.Generator().manual_seed(77))
    for checker in (reward, second):
        exact = (checker.present(d["x"]) == d["present"].bool()).flatten(1).all(1)
        assert exact.float().mean() >= 0.98
