"""Energy distillation (recompose.training.distill): the loss, conditions, resumption, the CLI
and the shipped distilled models."""

import copy
import json

import pytest
import torch
from click.testing import CliRunner

import recompose as rc
from recompose.cli.main import cli
from recompose.config import TrainConfig
from recompose.data import get_toy2d
from recompose.io import CheckpointError
from recompose.models.loading import PRETRAINED, pretrained, shipped_path
from recompose.models.parameterization import EnergyModel
from recompose.training.distill import distillation_loss, distillation_terms, teacher_config
from recompose.training.losses import dsm_loss, noised
from recompose.training.trainer import Trainer


def small(**kw):
    return teacher_config("ring", steps=6, batch_size=64, checkpoint_every=3, **kw)


@pytest.mark.parametrize("kind", ["energy", "score"])
def test_a_student_equal_to_its_teacher_has_zero_loss_and_others_do_not(kind):
    """The loss compares the student's ε̂ with the teacher's at the same noised points; an
    energy student or a score student (knowledge distillation into another network)."""
    teacher = pretrained("ring", kind)
    x0 = get_toy2d("ring").sample(256, torch.Generator().manual_seed(0))
    same = distillation_loss(copy.deepcopy(teacher), teacher, x0, torch.Generator().manual_seed(1))
    assert same.abs().max() < 1e-10
    other = distillation_loss(copy.deepcopy(pretrained("bar", kind)), teacher, x0,
                              torch.Generator().manual_seed(1))
    assert other.mean() > 0.1
    # with dsm_weight the plain denoising term is added, drawn with the same t and noise
    mixed = distillation_loss(copy.deepcopy(teacher), teacher, x0,
                              torch.Generator().manual_seed(1), dsm_weight=0.5)
    plain = dsm_loss(teacher, x0, torch.Generator().manual_seed(1))
    torch.testing.assert_close(mixed, 0.5 * plain.detach(), rtol=1e-4, atol=1e-7)


def test_conditional_teachers_see_the_same_conditions_and_null_mask():
    """Student = a copy of a conditional teacher, condition dropout 0.5: a zero loss means
    every row got the same condition (or the null one) in both networks."""
    config = TrainConfig(data="digits", parameterization="energy", steps=2, batch_size=32,
                         label_dropout=0.5, distill_from="in-memory teacher",
                         network={"arch": "resmlp", "dim": 64, "width": 32, "num_blocks": 1,
                                  "emb_dim": 16, "widen": 1, "num_classes": 10})
    probe = Trainer(config, "/nonexistent", teacher=pretrained("digits-cond", "energy"))
    probe.teacher = copy.deepcopy(probe.model).requires_grad_(False)
    assert probe.train_step() < 1e-10
    # and a teacher given other conditions would not agree: the check has power
    _, c_teacher = probe._conditions(torch.arange(32) % 10, 32)
    assert (c_teacher == probe.teacher.net.null_condition(32)).any()
    assert not (c_teacher == probe.teacher.net.null_condition(32)).all()


def _digits_views(model, x, t, labels):
    """``ε̂`` of a digits model under the labels and under the null condition."""
    n = len(x)
    with torch.no_grad():
        return (model.epsilon(x, t, c=model.net.encode_condition(labels)).detach(),
                model.epsilon(x, t, c=model.net.null_condition(n)).detach())


def test_the_contrast_term_is_the_error_of_the_condition_contrast():
    """With ``contrast_weight = γ`` the loss gains ``γ mean_d ‖e(c) − e(∅)‖²``, ``e`` the
    student's ε̂ minus the teacher's, the two views taken at the same noised rows."""
    teacher, student = pretrained("digits-cond", "score"), pretrained("digits-cond", "energy")
    g = torch.Generator().manual_seed(3)
    x0 = torch.rand(48, 1, 8, 8, generator=g) * 2 - 1
    labels = torch.arange(48) % 10
    xt, t, noise = noised(x0, student, g)
    c, ct = student.net.encode_condition(labels), teacher.net.encode_condition(labels)
    base = distillation_terms(student, teacher, xt, t, noise, c, ct).detach()
    both = distillation_terms(student, teacher, xt, t, noise, c, ct, contrast_weight=4.0).detach()
    s_c, s_null = _digits_views(student, xt, t, labels)
    t_c, t_null = _digits_views(teacher, xt, t, labels)
    expected = 4.0 * (((s_c - t_c) - (s_null - t_null)) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(both - base, expected, rtol=1e-4, atol=1e-8)
    assert expected.mean() > 1e-3  # the two models' contrasts differ: the check has power
    same = distillation_terms(copy.deepcopy(teacher), teacher, xt, t, noise, ct, ct,
                              contrast_weight=4.0)
    assert same.abs().max() < 1e-10
    with pytest.raises(ValueError, match="conditional student and teacher"):
        distillation_terms(student, teacher, xt, t, noise, contrast_weight=1.0)


def test_contrast_weight_needs_distillation_and_conditions(tmp_path):
    with pytest.raises(ValueError, match="set distill_from"):
        TrainConfig(contrast_weight=1.0)
    with pytest.raises(ValueError, match="contrast_weight must be"):
        teacher_config("ring", contrast_weight=-1.0)
    with pytest.raises(ValueError, match="needs conditional data"):
        Trainer(small(contrast_weight=1.0), tmp_path)


def test_a_run_can_start_from_a_model_file(tmp_path):
    """``init_from``: the run's weights (and EMA) start as the file's; training goes on
    from them; a file of another network is refused in one line."""
    start = shipped_path("ring-distilled")
    trainer = Trainer(small(init_from=str(start)), tmp_path / "a")
    tensors, _ = rc.io.read_model_file(start)
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, tensors[k]), k
    fresh = Trainer(small(), tmp_path / "b")
    trainer.run()
    fresh.run()
    assert trainer.losses[0] < 0.5 * fresh.losses[0]  # it starts from a distilled student
    with pytest.raises(CheckpointError, match="cannot start from .*same network"):
        Trainer(small(init_from=str(shipped_path("digits-distilled"))), tmp_path / "c")


def test_checkpoints_written_before_new_config_entries_still_resume(tmp_path):
    """A checkpoint whose config lacks entries added since (``contrast_weight``,
    ``init_from``) resumes when they are at their defaults; an unknown entry is refused."""
    Trainer(small(), tmp_path).run(stop_at=3)
    state_file = tmp_path / "checkpoint" / "trainer.json"
    state = json.loads(state_file.read_text())
    for key in ("contrast_weight", "init_from"):
        del state["config"][key]
    state_file.write_text(json.dumps(state))
    resumed = Trainer(small(), tmp_path)
    assert resumed.load() and resumed.step == 3
    with pytest.raises(CheckpointError, match="different settings"):
        Trainer(small(contrast_weight=0.0, dsm_weight=1.0), tmp_path).load()
    state["config"]["from_the_future"] = 1
    state_file.write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="different settings"):
        Trainer(small(), tmp_path).load()


def test_distillation_resumes_bit_for_bit(tmp_path):
    a = Trainer(small(), tmp_path / "a")
    a.run()
    b = Trainer(small(), tmp_path / "b")
    b.run(stop_at=3)
    c = Trainer(small(), tmp_path / "b")
    assert c.load() and c.step == 3
    c.run()
    for (k, va), vc in zip(a.ema.state_dict().items(), c.ema.state_dict().values()):
        assert torch.equal(va, vc), k
    assert a.losses == c.losses


def test_the_trainer_distils_a_score_student(tmp_path):
    trainer = Trainer(small(parameterization="score", distill_from="ring:score"), tmp_path)
    trainer.run()
    assert trainer.step == 6 and not trainer.model.has_energy


def test_bad_teachers_and_configs_are_refused(tmp_path):
    with pytest.raises(ValueError, match="neither a shipped model nor a model file"):
        teacher_config("no-such-model")
    with pytest.raises(ValueError, match="event shape"):
        Trainer(teacher_config("ring"), tmp_path, teacher=pretrained("digits", "score"))
    other = rc.GaussianMixture([[0.0, 0.0]], 1.0, schedule=rc.LinearSchedule())
    with pytest.raises(ValueError, match="noise schedule"):
        Trainer(teacher_config("ring"), tmp_path, teacher=other)


def test_the_cli_distils_and_samples_distilled_models(tmp_path):
    run = CliRunner().invoke(cli, ["-q", "train", "--distill-from", "ring", "--steps", "4",
                                   "--batch-size", "64", "--out", str(tmp_path / "d")])
    assert run.exit_code == 0, run.output
    student = rc.load_model(tmp_path / "d" / "checkpoint" / "model.safetensors")
    assert isinstance(student, EnergyModel)
    run = CliRunner().invoke(cli, ["-q", "sample", "--model", "A=ring:distilled", "--model",
                                   "B=bar:distilled", "--expr", "A * B", "--sampler", "mala",
                                   "--levels", "3", "--n", "16", "--out", str(tmp_path / "s")])
    assert run.exit_code == 0, run.output
    run = CliRunner().invoke(cli, ["-q", "sample", "--model", "A=ring:score", "--expr", "A",
                                   "--sampler", "hmc", "--energy", "path", "--quadrature",
                                   "simpson", "--levels", "3", "--n", "16",
                                   "--out", str(tmp_path / "p")])
    assert run.exit_code == 0, run.output
    run = CliRunner().invoke(cli, ["-q", "sample", "--model", "A=ring:score", "--expr", "A",
                                   "--sampler", "hmc", "--levels", "3", "--n", "16",
                                   "--out", str(tmp_path / "q")])
    assert run.exit_code != 0 and "--energy path" in run.output


def test_the_cli_fine_tunes_a_conditional_student_with_the_contrast_term(tmp_path):
    start = shipped_path("digits-cond-distilled")
    run = CliRunner().invoke(cli, ["-q", "train", "--distill-from", "digits-cond", "--steps", "2",
                                   "--batch-size", "16", "--contrast-weight", "2",
                                   "--init-from", str(start), "--out", str(tmp_path / "d")])
    assert run.exit_code == 0, run.output
    _, meta = rc.io.read_model_file(tmp_path / "d" / "checkpoint" / "model.safetensors")
    assert meta["train"]["contrast_weight"] == 2.0
    assert meta["train"]["init_from"] == str(start.resolve())
    for args, why in ((["--data", "ring"], "applies only with --distill-from"),
                      (["--distill-from", "ring"], "needs conditional data")):
        run = CliRunner().invoke(cli, ["-q", "train", *args, "--steps", "2", "--contrast-weight",
                                       "1", "--out", str(tmp_path / "x")])
        assert run.exit_code != 0 and why in run.output, run.output


@pytest.mark.parametrize("name", PRETRAINED)
def test_shipped_distilled_models_match_their_teacher_better_than_scratch_energies(name):
    """Paired over the same noised points: the distilled model's error against the score
    teacher is below the from-scratch energy model's by more than 4 standard errors."""
    teacher = pretrained(name, "score")
    distilled = pretrained(name, "distilled")
    assert isinstance(distilled, EnergyModel)
    gen = torch.Generator().manual_seed(7)
    x0 = get_toy2d(name).sample(4096, gen)
    d = distillation_loss(distilled, teacher, x0, torch.Generator().manual_seed(8)).detach()
    e = distillation_loss(pretrained(name, "energy"), teacher, x0,
                          torch.Generator().manual_seed(8)).detach()
    diff = e - d
    assert diff.mean() > 4 * diff.std() / len(diff) ** 0.5, (d.mean(), e.mean())
