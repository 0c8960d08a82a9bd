"""Flow-matching (SD3, FLUX) and EDM models against diffusers itself, on tiny random-initialised
pipelines built here from configs (experiments/tiny_pipelines.py; nothing is downloaded: the
hub is switched off, so a test that reached for the network would fail, not skip).

diffusers' Euler steps (``FlowMatchEulerDiscreteScheduler.step``, ``EDMEulerScheduler.step``)
cast the sample to float32, so the float64 agreement is with the scheduler's loop written out:
its own sigmas and timesteps, its own preconditioning functions, its update ``x + dσ · v`` in
float64. The literal ``scheduler.step`` loop is compared in float32 at float32 rounding.
"""

import math
import os
import warnings

import pytest
import torch

import recompose as rc

os.environ["HF_HUB_OFFLINE"] = "1"  # any download attempt raises
os.environ["TRANSFORMERS_OFFLINE"] = "1"
pytest.importorskip("diffusers", reason="the diffusers extra is part of [test]")

from diffusers import EDMEulerScheduler, FluxPipeline  # noqa: E402

import experiments.tiny_pipelines as tiny  # noqa: E402
from recompose.integrations.diffusers import (  # noqa: E402
    from_pipeline,
    from_pretrained,
    latent_ids,
    pack_latents,
    scheduler_levels,
    unpack_latents,
)

PROMPT = "red cube"


def model_of(pipe, dtype=torch.float32):
    pipe.to(dtype)
    return from_pipeline(pipe, height=16, width=16, max_sequence_length=tiny.T5_TOKENS)


PIPELINES = tiny.PIPELINES


# --------------------------------------------------------------------- conversions
@pytest.mark.parametrize("kind", PIPELINES)
def test_flow_score_is_minus_epsilon_over_sigma_at_every_training_timestep(kind):
    """At all 1,000 training sigmas: ``x̂₀ = x − σ v`` (the scheduler's own, as in its stochastic
    step), ``ε̂ = (x − (1 − σ) x̂₀)/σ``, and our score ``= −ε̂/σ``, our ``denoised = x̂₀``."""
    pipe = PIPELINES[kind]()
    model = model_of(pipe, torch.float64)
    sch = pipe.scheduler
    sigmas = sch.sigmas.double()  # 1 … 1/N (dynamic shifting: unshifted at training)
    if sch.config.use_dynamic_shifting:
        s = model.schedule.shift
        sigmas = s * sigmas / (1 + (s - 1) * sigmas)
    x = torch.randn(len(sigmas), 4, 8, 8, generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64)
    t = model.schedule.time_of(sigmas)
    embeds, pooled = tiny.encode(pipe, PROMPT)
    with torch.no_grad():
        v = tiny.velocity(pipe, x, (sigmas.float() * 1000), embeds, pooled)
        view = model.prompt(PROMPT)
        score, x0 = view.score(x, t), view.denoised(x, t)
    s4 = sigmas.view(-1, 1, 1, 1)
    x0_ref = x - s4 * v
    eps_ref = (x - (1 - s4) * x0_ref) / s4
    torch.testing.assert_close(x0, x0_ref, rtol=1e-12, atol=1e-12)
    # compared as ε̂ = −σ s (the score itself grows as 1/σ, to 10³ at the last sigma)
    torch.testing.assert_close(-s4 * score, eps_ref, rtol=1e-12, atol=1e-12)


def test_flux_packing_and_positions_are_the_pipelines():
    x = torch.randn(3, 4, 8, 6)
    packed = pack_latents(x)
    torch.testing.assert_close(packed, FluxPipeline._pack_latents(x, 3, 4, 8, 6), rtol=0, atol=0)
    torch.testing.assert_close(unpack_latents(packed, 8, 6), x, rtol=0, atol=0)
    torch.testing.assert_close(latent_ids(8, 6, "cpu", torch.float32),
                               FluxPipeline._prepare_latent_image_ids(3, 4, 3, "cpu",
                                                                      torch.float32),
                               rtol=0, atol=0)


def test_dynamic_shift_levels_are_the_schedulers_sigmas():
    """FLUX's resolution-dependent ``mu`` (the pipeline's calculate_shift) gives our shift
    ``e^mu``; the scheduler's own steps become our levels with the same sigmas."""
    pipe = tiny.flux_pipeline()
    model = model_of(pipe)
    mu = tiny.set_steps(pipe, 7)
    assert model.schedule.shift == pytest.approx(math.exp(mu), rel=1e-12)
    levels = scheduler_levels(model, pipe.scheduler)
    torch.testing.assert_close(levels.sigma.flip(0), pipe.scheduler.sigmas[:-1].double(),
                               rtol=1e-12, atol=0)
    assert float(levels.alpha[-1]) == 0.0 and float(levels.t[-1]) == 1.0


def test_transformer_conditions_from_embeddings_equal_the_prompts():
    """Without a text encoder: ``null_embeds=(embeds, pooled)`` and ``given((embeds, pooled))``
    (one condition, or one per chain) are the prompts' views."""
    pipe = tiny.sd3_pipeline()
    direct = model_of(pipe)
    null, cond = tiny.encode(pipe, ""), tiny.encode(pipe, PROMPT)
    bare = rc.from_diffusers(pipe.transformer, pipe.scheduler, null_embeds=(null[0][0],
                                                                           null[1][0]))
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(bare.score(x, 0.4), direct.score(x, 0.4))
        want = direct.prompt(PROMPT).score(x, 0.4)
        torch.testing.assert_close(bare.given((cond[0][0], cond[1][0])).score(x, 0.4), want)
        per_chain = bare.given((cond[0].expand(2, -1, -1), cond[1].expand(2, -1)))
        torch.testing.assert_close(per_chain.score(x, 0.4), want)
    with pytest.raises(rc.CapabilityError, match="prompt strings need a text encoder"):
        bare.prompt(PROMPT)


# --------------------------------------------------------------------- the Euler loops
@pytest.mark.parametrize("kind", PIPELINES)
def test_ode_equals_the_flow_match_euler_loop_in_float64(kind):
    """From pure noise (σ = 1) over the scheduler's own 6 steps (SD3: shift 3; FLUX: dynamic
    ``mu``): one prompt, and true CFG at scale 4 (``P**4 * U**-3``, exponents summing to 1)."""
    pipe = PIPELINES[kind]()
    model = model_of(pipe, torch.float64)
    tiny.set_steps(pipe, 6)
    levels = scheduler_levels(model, pipe.scheduler)
    x_init = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1),
                         dtype=torch.float64)
    cond, null = tiny.encode(pipe, PROMPT), tiny.encode(pipe, "")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rc.ApproximationWarning)  # FLUX-dev's CFG is approximate
        cases = [(model.prompt(PROMPT), None), (model.prompt(PROMPT) ** 4 * model ** -3, 4.0)]
    for composite, w in cases:
        ours = rc.sample(composite, 3, "ode", num_levels=levels, x_init=x_init).x
        ref = tiny.flow_loop(pipe, x_init, *cond, w=w, null=null)
        scale = float(ref.abs().max())
        assert float((ours - ref).abs().max()) <= 1e-9 * scale, (kind, w)


def test_ode_equals_the_literal_scheduler_step_loop_in_float32():
    """diffusers' own ``scheduler.step`` (float32): agreement at float32 rounding."""
    pipe = tiny.sd3_pipeline()
    model = model_of(pipe)
    tiny.set_steps(pipe, 6)
    levels = scheduler_levels(model, pipe.scheduler)
    x = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    ours = rc.sample(model.prompt(PROMPT), 3, "ode", num_levels=levels, x_init=x).x
    embeds, pooled = tiny.encode(pipe, PROMPT)
    with torch.no_grad():
        for t in pipe.scheduler.timesteps:
            x = pipe.scheduler.step(tiny.velocity(pipe, x, t, embeds, pooled), t, x).prev_sample
    assert float((ours - x).abs().max()) <= 1e-5 * float(x.abs().max())


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_ode_equals_the_edm_euler_loop_in_float64(prediction):
    """EDM preconditioning (``c_in``, ``c_noise = ¼ log σ``, ``c_skip``, ``c_out``) from the
    scheduler's own functions; Karras sigmas over 8 steps, from σ_max = 80 to 0."""
    unet = tiny.tiny_unet().double()
    sch = EDMEulerScheduler(prediction_type=prediction)
    model = rc.from_diffusers(unet, sch)
    assert model.schedule == rc.VESchedule(0.002, 80.0, data_std=0.5)
    sch.set_timesteps(8)
    levels = scheduler_levels(model, sch)
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(2),
                    dtype=torch.float64) * float(sch.init_noise_sigma)
    ours = rc.sample(model, 3, "ode", num_levels=levels, x_init=x).x
    ref = tiny.edm_loop(unet, sch, x)
    assert float((ours - ref).abs().max()) <= 1e-9 * float(ref.abs().max())


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_ode_equals_the_euler_discrete_loop(prediction):
    """``EulerDiscreteScheduler`` (k-diffusion's Euler on a DDPM table) runs in the variables
    ``x/α`` with ``σ/α``, where DDIM is that same Euler step: on its own (trailing, integer)
    timesteps our ODE on the VP table agrees with diffusers' float32 loop at float32 rounding."""
    from diffusers import EulerDiscreteScheduler

    unet = tiny.tiny_unet()
    sch = EulerDiscreteScheduler(prediction_type=prediction, timestep_spacing="trailing",
                                 beta_schedule="scaled_linear")
    model = rc.from_diffusers(unet, sch)
    sch.set_timesteps(10)
    levels = scheduler_levels(model, sch)
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    x = x * sch.init_noise_sigma
    ours = rc.sample(model, 3, "ode", num_levels=levels,
                     x_init=x / float(sch.sigmas[0] ** 2 + 1) ** 0.5).x
    with torch.no_grad():
        for t in sch.timesteps:
            out = unet(sch.scale_model_input(x, t), t).sample
            x = sch.step(out, t, x).prev_sample
    assert float((ours - x).abs().max()) <= 1e-5 * float(x.abs().max())


# --------------------------------------------------------------------- pure noise
def test_pure_noise_start_is_for_the_ode_and_for_exponents_summing_to_one():
    pipe = tiny.sd3_pipeline()
    model = model_of(pipe)
    tiny.set_steps(pipe, 4)
    levels = scheduler_levels(model, pipe.scheduler)
    with pytest.raises(ValueError, match="pure noise"):
        rc.sample(model, 2, "reverse", num_levels=levels, seed=0)
    with pytest.raises(rc.CapabilityError, match="sum to 2"):
        rc.sample(model.prompt("red cube") * model.prompt("blue sphere"), 2, "ode",
                  num_levels=levels, seed=0)
    and_ = model.prompt("red cube") * model.prompt("blue sphere") / model  # sums to 1
    assert torch.isfinite(rc.sample(and_, 2, "ode", num_levels=levels, seed=0).x).all()
    # without the σ = 1 level, every composition runs
    product = model.prompt("red cube") * model.prompt("blue sphere")
    assert torch.isfinite(rc.sample(product, 2, "ode", num_levels=4, seed=0).x).all()


def test_an_epsilon_model_has_no_denoised_value_at_pure_noise():
    flow = rc.RectifiedFlowSchedule()
    net = lambda x, t: torch.zeros_like(x)  # noqa: E731
    from recompose.models.parameterization import ScoreModel

    model = ScoreModel(net, flow, (2,), prediction="epsilon")
    with pytest.raises(rc.CapabilityError, match="pure noise"):
        rc.sample(model, 2, "ode", num_levels=flow.levels_at([0.5, 1.0]), seed=0)


# --------------------------------------------------------------------- every sampler
@pytest.mark.parametrize("kind", PIPELINES)
def test_every_sampler_runs_on_a_transformer_composition(kind):
    """Reverse SDE, ODE, annealed ULA / U-HMC, HMC with path energies and FKC on
    ``P(a) · P(b) / U``; the three views are one stacked transformer call per evaluation."""
    pipe = PIPELINES[kind]()
    model = model_of(pipe)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rc.ApproximationWarning)
        comp = model.prompt("red cube") * model.prompt("blue sphere") / model
    calls = []
    hook = pipe.transformer.register_forward_hook(lambda m, a, k: calls.append(1))
    runs = {"reverse": {}, "ode": {}, "ula": {"num_steps": 1}, "uhmc": {"num_steps": 1},
            "hmc": {"num_steps": 1, "energy": "path"}, "fkc": {}}
    for name, options in runs.items():
        calls.clear()
        r = rc.sample(comp, 4, name, num_levels=3, seed=0, **options)
        assert r.x.shape == (4, 4, 8, 8) and torch.isfinite(r.x).all(), name
        if name in ("reverse", "ode"):
            assert len(calls) == 3, name  # one call per level for three views
    hook.remove()


# --------------------------------------------------------------------- guidance distillation
def test_guidance_distilled_views_warn_when_divided_or_negated():
    distilled = model_of(tiny.flux_pipeline(guidance_embeds=True))
    plain = model_of(tiny.flux_pipeline(guidance_embeds=False))
    assert distilled.guidance_distilled and not plain.guidance_distilled
    with pytest.warns(rc.ApproximationWarning, match="guidance-distilled"):
        distilled.prompt("red cube") / distilled
    with pytest.warns(rc.ApproximationWarning, match="guidance-distilled"):
        distilled.prompt("red cube") * distilled.prompt("dog") ** -1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        distilled.prompt("red cube") * distilled.prompt("blue sphere")  # no division: exact
        plain.prompt("red cube") / plain


# --------------------------------------------------------------------- EDM denoisers
def test_from_denoiser_gives_tweedies_score_on_the_ve_path():
    """A Gaussian's exact denoiser ``D = x c²/(c² + σ²)`` gives the exact score
    ``−x/(c² + σ²)`` and the ODE maps the prior to variance c² (a linear ODE, Heun)."""
    c = 0.5

    def denoiser(x, sigma):
        return x * (c**2 / (c**2 + sigma**2))[:, None]

    model = rc.from_denoiser(denoiser, 0.002, 80.0, event_shape=(2,), sigma_data=c)
    x = torch.randn(5, 2, dtype=torch.float64)
    for t in (0.0, 0.3, 1.0):  # float64: D − x cancels to σ²/c² of x at small σ
        sigma = model.schedule(torch.tensor(t, dtype=torch.float64))[1]
        torch.testing.assert_close(model.score(x, t), -x / (c**2 + sigma**2), rtol=1e-10,
                                   atol=0)
    assert model.schedule.prior_std() == pytest.approx(math.sqrt(c**2 + 80.0**2))
    n = 4000
    r = rc.sample(model, n, rc.samplers.ODE("heun"), num_levels=64, seed=0)
    var = r.x.double().var(0)
    # the sample variance of n Gaussian draws has standard error c² √(2/(n−1))
    assert torch.allclose(var, torch.full_like(var, c**2), atol=4 * c**2 * math.sqrt(2 / (n - 1)))


def test_from_denoiser_conditional_views():
    def denoiser(x, sigma, c):
        return c * (1 / (1 + sigma**2))[:, None]

    model = rc.from_denoiser(denoiser, 0.01, 10.0, event_shape=(2,),
                             null_condition=torch.zeros(2))
    x = torch.zeros(3, 2)
    shift = model.given(torch.tensor([1.0, -1.0]))
    torch.testing.assert_close(model.denoised(x, 0.0), torch.zeros(3, 2))
    assert float(shift.denoised(x, 0.0)[0, 0]) == pytest.approx(1 / (1 + 0.01**2), rel=1e-5)


# --------------------------------------------------------------------- pipelines on disk
@pytest.fixture(scope="module", params=list(PIPELINES))
def saved_pipeline(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    pipe = PIPELINES[request.param]()
    tiny.save(pipe, folder)
    return request.param, folder, pipe


def test_save_pretrained_pipelines_round_trip(saved_pipeline):
    kind, folder, pipe = saved_pipeline
    loaded = from_pretrained(folder, height=16, width=16, max_sequence_length=tiny.T5_TOKENS)
    direct = model_of(pipe)
    assert loaded.event_shape == (4, 8, 8) and loaded.guidance_distilled == (kind == "flux")
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        # a reloaded CLIP projection differs from the in-memory one by a float rounding
        torch.testing.assert_close(loaded.prompt(PROMPT).score(x, 0.3),
                                   direct.prompt(PROMPT).score(x, 0.3), rtol=1e-5, atol=1e-5)
        images = loaded.decode(x)
        config = pipe.vae.config
        expected = pipe.vae.decode(x / config.scaling_factor + config.shift_factor).sample
    assert images.shape == (2, 3, 16, 16)
    torch.testing.assert_close(images, expected.clamp(-1, 1), rtol=1e-5, atol=1e-5)


def test_cli_samples_a_prompt_product_of_each_pipeline(saved_pipeline, tmp_path):
    kind, folder, _ = saved_pipeline
    out = tmp_path / "run"
    from click.testing import CliRunner

    from recompose.cli.main import cli

    args = ["sample", "--diffusers", str(folder), "--prompt", "P0=red cube", "--prompt",
            "P1=blue sphere", "--expr", "P0 * P1 / U", "--size", "16", "--sampler", "reverse",
            "--levels", "8", "--n", "4", "--out", str(out), "--quiet"]
    result = CliRunner().invoke(cli, args)  # in process (the subprocess path: test_diffusers)
    assert result.exit_code == 0, result.output[-2000:]
    import numpy as np

    arrays = np.load(out / "samples.npz")
    assert arrays["x"].shape == (4, 3, 16, 16) and arrays["latents"].shape == (4, 4, 8, 8)
    assert np.isfinite(arrays["x"]).all() and (out / "figures" / "samples.png").exists()
