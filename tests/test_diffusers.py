"""The diffusers backend against diffusers itself, on tiny random-initialised models built here
from configs (nothing is downloaded: the hub is switched off for this module, so a test that
reached for the network would fail, not skip)."""

import json
import os
import subprocess
import sys

import pytest
import torch

import recompose as rc
from recompose.integrations.diffusers import from_diffusers, from_pretrained

os.environ["HF_HUB_OFFLINE"] = "1"  # any download attempt raises
os.environ["TRANSFORMERS_OFFLINE"] = "1"
diffusers = pytest.importorskip("diffusers", reason="the diffusers extra is part of [test]")

from diffusers import (  # noqa: E402
    AutoencoderKL,
    DDPMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
    UNet2DModel,
)

from experiments.attributes import text_encoder, word_tokenizer  # noqa: E402

PREDICTIONS = ("epsilon", "v_prediction", "sample")


def tiny_unet(seed=0, size=8, channels=3):
    torch.manual_seed(seed)
    return UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels,
                       block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                       down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D")).eval()


def tiny_cond_unet(seed=0, size=8, channels=3):
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=size, in_channels=channels, out_channels=channels, block_out_channels=(8, 16),
        layers_per_block=1, norm_num_groups=4, cross_attention_dim=32, attention_head_dim=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D")).eval()


def tiny_text():
    tokenizer = word_tokenizer()
    return text_encoder(len(tokenizer.get_vocab()), seed=1), tokenizer


def tiny_vae(seed=0):
    torch.manual_seed(seed)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                         block_out_channels=(8, 16), norm_num_groups=4, sample_size=16,
                         down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2).eval()


def diffusers_loop(unet, scheduler, n, shape, seed, dtype=torch.float32, cond=None):
    """diffusers' own DDPM sampling loop, noise drawn as rc.sample draws it (one generator)."""
    scheduler.set_timesteps(scheduler.config.num_train_timesteps)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *shape), generator=gen, dtype=dtype)
    extra = {} if cond is None else {"encoder_hidden_states": cond}
    with torch.no_grad():
        for k in scheduler.timesteps:
            out = unet(x, k, **extra).sample
            x = scheduler.step(out, k, x, generator=gen).prev_sample
    return x


# --------------------------------------------------------------------- scores
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_score_is_minus_epsilon_over_sigma_at_every_trained_timestep(prediction):
    unet = tiny_unet()
    sch = DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction, clip_sample=False)
    model = rc.from_diffusers(unet, sch)
    n_t = sch.config.num_train_timesteps
    x = torch.randn(n_t, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    k = torch.arange(n_t)
    t = (k + 1).double() / n_t  # timestep k sits at t = (k + 1)/N
    with torch.no_grad():
        score = model.score(x, t.float())
        out = unet(x, k).sample
    a_bar = sch.alphas_cumprod.double()
    # ε from diffusers: its own x̂₀ for this prediction type, then ε = (x − √ᾱ x̂₀)/√(1 − ᾱ).
    ref = torch.empty_like(score, dtype=torch.float64)
    for i in range(n_t):
        x0 = sch.step(out[i:i + 1], int(k[i]), x[i:i + 1]).pred_original_sample.double()
        eps = (x[i:i + 1].double() - a_bar[i].sqrt() * x0) / (1 - a_bar[i]).sqrt()
        ref[i] = -eps[0] / (1 - a_bar[i]).sqrt()
    rel = (score.double() - ref).abs() / ref.abs().amax(dim=(1, 2, 3), keepdim=True)
    assert rel.max() < 1e-4  # float32 rounding, relative to each timestep's scale


def test_schedule_is_the_scheduler_table_and_timesteps_map_back():
    sch = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    model = rc.from_diffusers(tiny_unet(), sch)
    levels = model.schedule.levels(1000)
    torch.testing.assert_close(levels.alpha**2, sch.alphas_cumprod.double(), rtol=1e-13, atol=0)
    assert torch.allclose(levels.beta, sch.betas.double(), atol=2e-7)
    t50 = model.schedule.levels(50).t.float()
    assert model.schedule.timestep(t50).tolist() == list(range(19, 1000, 20))
    assert model.schedule == rc.from_diffusers(tiny_unet(1), sch).schedule  # composable


# --------------------------------------------------------------------- reverse diffusion
@pytest.mark.parametrize("prediction,clip,n_t", [
    ("epsilon", True, 1000), ("epsilon", False, 100), ("v_prediction", True, 100),
    ("v_prediction", False, 100), ("sample", True, 100), ("sample", False, 100)])
def test_reverse_diffusion_equals_the_ddpm_scheduler_loop(prediction, clip, n_t):
    """In float64 the two loops agree to rounding (1e-9 relative): the same algorithm. (In
    float32 the random network amplifies diffusers' float32 coefficient rounding over the
    loop; every single float32 step is compared in the next test.)"""
    unet = tiny_unet().double()
    sch = DDPMScheduler(num_train_timesteps=n_t, prediction_type=prediction, clip_sample=clip)
    sch.alphas_cumprod = sch.alphas_cumprod.double()  # its step arithmetic in float64 too
    ref = diffusers_loop(unet, sch, 3, (3, 8, 8), seed=5, dtype=torch.float64)
    ours = rc.sample(rc.from_diffusers(unet, sch), 3, "reverse", num_levels=n_t, seed=5,
                     clip=(-1.0, 1.0) if clip else None).x
    assert ours.dtype == torch.float64
    assert (ours - ref).abs().max() <= 1e-9 * max(1.0, float(ref.abs().max()))


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_every_float32_ddpm_step_equals_the_scheduler_step_in_float64(prediction):
    """Our float32 step against diffusers' ``DDPMScheduler.step`` evaluated in float64, at every
    trained timestep, with the same noise. (diffusers' own float32 step is off from its float64
    one by up to ~2e-4 near t = 0, where 1 − ᾱ cancels; this is why the float32 loops of the
    previous test would differ.)"""
    unet = tiny_unet()
    sch = DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction, clip_sample=False)
    sch.alphas_cumprod = sch.alphas_cumprod.double()
    model = rc.from_diffusers(unet, sch)
    levels = model.schedule.levels(1000)
    x = torch.randn(1000, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    t = (torch.arange(1000) + 1).float() / 1000
    with torch.no_grad():
        score, out = model.score(x, t), unet(x, torch.arange(1000)).sample
    worst = 0.0
    for k in range(1000):
        gen64 = torch.Generator().manual_seed(k)
        step = sch.step(out[k:k + 1].double(), k, x[k:k + 1].double(), generator=gen64)
        std = sch._get_variance(k).sqrt() if k > 0 else 0.0  # diffusers' own β̃
        mean = step.prev_sample - std * torch.randn((1, 3, 8, 8), dtype=torch.float64,
                                                    generator=torch.Generator().manual_seed(k))
        z = torch.randn((1, 3, 8, 8), generator=torch.Generator().manual_seed(k))
        ours = levels.posterior_step(x[k:k + 1], score[k:k + 1], k,
                                     torch.Generator().manual_seed(k))
        worst = max(worst, float((ours.double() - (mean + std * z.double())).abs().max()))
    assert worst <= 1e-5


# --------------------------------------------------------------------- conditions
def conditional_model(dtype=torch.float32):
    encoder, tokenizer = tiny_text()
    unet = tiny_cond_unet().to(dtype)
    sch = DDPMScheduler(num_train_timesteps=100)
    return rc.from_diffusers(unet, sch, text_encoder=encoder, tokenizer=tokenizer), encoder, \
        tokenizer, unet


def embed(encoder, tokenizer, text):
    ids = tokenizer([text], padding="max_length", max_length=tokenizer.model_max_length,
                    return_tensors="pt").input_ids
    return encoder(ids).last_hidden_state[0]


def test_prompt_views_null_view_and_one_unet_call_per_product():
    model, encoder, tokenizer, unet = conditional_model()
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(0.37)
    red, blue = model.given("red cube"), model.given(embed(encoder, tokenizer, "blue sphere"))
    sigma = model.schedule(t)[1]
    k = model.schedule.timestep(t.double()).float()
    with torch.no_grad():
        for view, text in [(red, "red cube"), (blue, "blue sphere"), (model, "")]:
            c = embed(encoder, tokenizer, text).expand(4, -1, -1)
            ref = -unet(x, k.expand(4), encoder_hidden_states=c).sample / sigma
            torch.testing.assert_close(view.score(x, t), ref, rtol=1e-5, atol=1e-5)
        calls = []
        hook = unet.register_forward_hook(lambda *a: calls.append(a[1][0].shape[0]))
        product = (red * blue).score(x, t)
        guided = rc.cfg(red, model, 3.0).score(x, t)
        hook.remove()
    assert calls == [8, 8]  # one stacked call per composite, K·B rows
    torch.testing.assert_close(product, red.score(x, t) + blue.score(x, t), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(guided, 3 * red.score(x, t) - 2 * model.score(x, t),
                               rtol=1e-4, atol=1e-4)


def test_conditional_unet_without_text_encoder_needs_the_null_condition():
    sch = DDPMScheduler(num_train_timesteps=100)
    with pytest.raises(rc.CapabilityError, match="null"):
        rc.from_diffusers(tiny_cond_unet(), sch)
    model = rc.from_diffusers(tiny_cond_unet(), sch, null_embeds=torch.zeros(6, 32))
    with pytest.raises(rc.CapabilityError, match="text encoder"):
        model.given("red cube")
    with pytest.raises(ValueError, match="shape"):
        model.given(torch.zeros(6, 31))
    assert model.given(torch.ones(6, 32)).score(torch.zeros(2, 3, 8, 8), 0.5).shape == (2, 3, 8, 8)


def test_half_precision_weights_sample_in_float32():
    ref, *_ = conditional_model()
    model, *_ = conditional_model(torch.bfloat16)
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    s16 = model.given("red cube").score(x, 0.5)
    assert s16.dtype == torch.float32
    torch.testing.assert_close(s16, ref.given("red cube").score(x, 0.5), rtol=0.1, atol=0.1)
    result = rc.sample(model.given("red cube") * model.given("blue"), 3, "ula", num_levels=5,
                       num_steps=2, seed=0)
    assert result.x.dtype == torch.float32 and torch.isfinite(result.x).all()


def test_energy_head_gives_energies_and_their_gradient_is_the_score():
    sch = DDPMScheduler(num_train_timesteps=100)
    model = rc.from_diffusers(tiny_unet(), sch, parameterization="energy")
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    model = model.double()
    energy, score = model.energy_and_score(x, 0.4)
    assert energy.shape == (3,) and score.shape == x.shape
    # central differences of E along a random direction equal −⟨score, v⟩
    v = torch.randn_like(x)
    h = 1e-5
    fd = (model.energy(x + h * v, 0.4) - model.energy(x - h * v, 0.4)) / (2 * h)
    torch.testing.assert_close(fd, -(score * v).flatten(1).sum(1), rtol=1e-5, atol=1e-6)
    result = rc.sample(model.float(), 4, "hmc", num_levels=5, num_steps=2, seed=0)
    assert torch.isfinite(result.x).all()
    with pytest.raises(ValueError, match="ε parameterisation"):
        rc.from_diffusers(tiny_unet(), DDPMScheduler(prediction_type="v_prediction"),
                          parameterization="energy")


def test_score_only_unet_refuses_mh_without_path_energies():
    model = rc.from_diffusers(tiny_unet(), DDPMScheduler(num_train_timesteps=100))
    with pytest.raises(rc.CapabilityError, match="energy='path'"):
        rc.sample(model, 2, "hmc", num_levels=3)
    result = rc.sample(model, 2, "hmc", energy="path", num_levels=3, num_steps=1, seed=0)
    assert torch.isfinite(result.x).all()


# --------------------------------------------------------------------- pipelines
def tiny_pipeline(folder):
    """A tiny latent text-to-image pipeline saved by diffusers itself; returns the folder."""
    return _tiny_pipeline(folder)[0]


def _tiny_pipeline(folder):
    encoder, tokenizer = tiny_text()
    pipe = StableDiffusionPipeline(
        vae=tiny_vae(), text_encoder=encoder, tokenizer=tokenizer,
        unet=tiny_cond_unet(size=8, channels=4),
        scheduler=DDPMScheduler(num_train_timesteps=100), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder, pipe


@pytest.fixture(scope="module")
def latent_pipeline(tmp_path_factory):
    return _tiny_pipeline(tmp_path_factory.mktemp("tiny_sd"))


def test_save_pretrained_folder_round_trips(latent_pipeline):
    folder, pipe = latent_pipeline
    loaded = from_pretrained(folder)
    direct = from_diffusers(pipe.unet, pipe.scheduler, text_encoder=pipe.text_encoder,
                            tokenizer=pipe.tokenizer, vae=pipe.vae)
    assert loaded.event_shape == (4, 8, 8) and loaded.conditional
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded.prompt("red cube").score(x, 0.3),
                                   direct.given("red cube").score(x, 0.3))
        images = loaded.decode(x)
        # the VAE decodes latents divided by its scaling factor (plus its shift, if any)
        config = pipe.vae.config
        assert config.scaling_factor != 1
        z = x / config.scaling_factor + (getattr(config, "shift_factor", None) or 0.0)
        expected = pipe.vae.decode(z).sample.clamp(-1, 1)
    assert images.shape == (2, 3, 16, 16) and images.abs().max() <= 1
    torch.testing.assert_close(images, expected, rtol=1e-5, atol=1e-5)


def test_from_pretrained_explains_a_folder_that_is_not_a_pipeline(tmp_path):
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        from_pretrained(tmp_path)


def test_cli_samples_a_prompt_product_of_a_tiny_latent_pipeline(latent_pipeline, tmp_path):
    folder, _ = latent_pipeline
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "recompose", "sample", "--diffusers", str(folder),
           "--prompt", "P0=red cube", "--prompt", "P1=blue sphere", "--expr", "P0 * P1",
           "--sampler", "reverse", "--levels", "20", "--n", "4", "--out", str(out), "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env=os.environ | {"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    import numpy as np

    arrays = np.load(out / "samples.npz")
    assert arrays["x"].shape == (4, 3, 16, 16) and arrays["latents"].shape == (4, 4, 8, 8)
    config = json.loads((out / "config.json").read_text())
    assert config["diffusers"] == str(folder) and config["prompts"] == ["P0=red cube",
                                                                        "P1=blue sphere"]
    assert (out / "figures" / "samples.png").exists()
    bad_cmd = [str(tmp_path / "b") if c == str(out) else "P0 * P9" if c == "P0 * P1" else c
               for c in cmd]
    bad = subprocess.run(bad_cmd,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--prompt P9=TEXT" in bad.stderr


def test_core_import_works_without_diffusers():
    code = ("import sys; sys.modules['diffusers'] = None; import recompose as rc; "
            "from recompose.integrations.diffusers import require_diffusers\n"
            "try:\n    require_diffusers()\nexcept ImportError as e:\n    print(e)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and '.[diffusers]' in proc.stdout


def test_cli_prompt_bindings_are_checked_before_loading():
    import click

    from recompose.cli.sample import build_diffusers_model

    for prompts, message in [(("U=red",), "NAME not U"), (("P0",), "expects NAME=TEXT"),
                             (("P0=red", "P0=blue"), "P0 is given twice")]:
        with pytest.raises(click.UsageError, match=message):
            build_diffusers_model("no-such-folder", prompts, "U", "float32", "cpu")


def test_the_null_condition_is_the_empty_prompts_encoding():
    """The null view ``p_t(x)`` is the text encoder's output for the empty prompt exactly —
    checked with a tokenizer that tells "" from " " (CLIP's strips whitespace, so a model
    built on it could not tell a null view made from " " apart)."""
    encoder, _ = tiny_text()

    class Chars:  # one id per character (ids 3…), padded with 0, a start token 1
        model_max_length = 6

        def __call__(self, prompts, padding, max_length, truncation, return_tensors):
            rows = [[1] + [3 + (ord(ch) % 20) for ch in p][: max_length - 1] for p in prompts]
            ids = torch.tensor([r + [0] * (max_length - len(r)) for r in rows])
            return type("Tokens", (), {"input_ids": ids})()

    tokenizer = Chars()
    model = rc.from_diffusers(tiny_cond_unet(), DDPMScheduler(num_train_timesteps=100),
                              text_encoder=encoder, tokenizer=tokenizer)
    ids = tokenizer([""], "max_length", 6, True, "pt").input_ids
    space = tokenizer([" "], "max_length", 6, True, "pt").input_ids
    with torch.no_grad():
        empty = encoder(ids, return_dict=False)[0][0]
        blank = encoder(space, return_dict=False)[0][0]
    assert not torch.allclose(empty, blank)
    torch.testing.assert_close(model.net.null_embeds, empty)
