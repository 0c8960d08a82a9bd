r"""diffusers models in the algebra: a UNet or transformer and its scheduler as a
:class:`DiffusionModel`.

Requires the optional extra ``pip install -e ".[diffusers]"`` (diffusers, transformers); nothing
else in recompose imports this module.

**Paths** (:func:`scheduler_path`), with ``x_t = α x₀ + σ ε``:

* a DDPM table (any scheduler with ``alphas_cumprod``: DDPM, DDIM, Euler…): its
  :class:`~recompose.schedules.DiscreteSchedule` puts timestep ``k`` at ``t = (k + 1)/N``
  (exact there; ``log ᾱ`` linear in ``t`` in between), and the network is called with
  ``k = N t − 1``. At the trained timesteps (``num_levels`` dividing ``N``) this is the integer
  the model was trained on; between them the network sees a fractional timestep. Prediction
  types ``"epsilon"``, ``"v_prediction"`` (``v = α ε − σ x₀``), ``"sample"`` (``x̂₀``).
* flow matching (``FlowMatchEulerDiscreteScheduler``; SD3, FLUX): ``α = 1 − σ`` with
  ``σ = s u/(1 + (s − 1) u)`` (:class:`~recompose.schedules.RectifiedFlowSchedule`); ``s`` is
  the scheduler's ``shift``, or with dynamic shifting ``e^μ`` for the pipelines'
  resolution-dependent ``μ`` (:func:`flow_shift`). The network sees the timestep ``σ N``
  (FLUX's transformer ``σ``) and predicts ``v = ε − x₀`` (recompose's ``"flow"``).
* EDM (``EDMEulerScheduler``): ``α = 1``, ``σ`` from ``σ_min`` to ``σ_max``
  (:class:`~recompose.schedules.VESchedule` with ``data_std = σ_data``); the network gets
  ``c_in x`` and ``c_noise = ¼ log σ`` and its output ``F`` gives
  ``x̂₀ = c_skip x + c_out F`` (``c_skip = σ_d²/(σ² + σ_d²)``, ``c_out = ±σ σ_d/√(σ² + σ_d²)``,
  minus for v-prediction): an ``"x0"`` prediction.

Every output is converted by :mod:`recompose.models.predictions`; the score is ``s = −ε̂/σ``
(shape of ``x``), and ``x̂₀`` comes from the output itself, so a flow's pure noise (``σ = 1``)
has one (the ``"ode"`` sampler starts there on :func:`scheduler_levels`). A UNet with a learned
variance (``2C`` output channels) gives its first ``C`` channels.

**Energies.** ``parameterization="energy"`` reads a UNet as an energy head ``f`` with
``U = ‖f − x‖²`` (or ``½‖f‖²``), ``E = U/σ_t`` (:class:`~recompose.models.parameterization.
EnergyModel`): a UNet trained (or distilled) in that parameterisation gives energies, so MALA,
HMC and SMC run on it. Score networks run them with ``energy="path"``.

**Conditions.** A ``UNet2DConditionModel`` takes ``encoder_hidden_states`` of shape ``(L, D)``
per sample. An ``SD3Transformer2DModel`` or ``FluxTransformer2DModel`` takes prompt embeddings
``(L, D)`` and pooled projections ``(P,)``; recompose holds one such condition as the flat
vector ``[embeds.flatten(), pooled]`` (``condition_ndim = 1``). ``model.given(c)`` is
``p_t(x | c)`` for a prompt string (through the text encoder or the pipeline's own
``encode_prompt``: CLIP, and T5 where present) or embeddings; ``model`` itself is the null
(empty-prompt) view. A product or guidance over prompts is one network call per step on the
stacked batch. FLUX's latents ``(C, H, W)`` are packed into 2×2-patch tokens ``(H/2·W/2, 4C)``
with their positions for each call and unpacked after (:func:`pack_latents`).

**Guidance distillation.** A transformer with a guidance embedding (FLUX-dev) takes the
guidance scale as an input (``guidance_scale``, 3.5 by default); its empty-prompt view is not
an unconditional density, so negative powers of its views (NOT, CFG, ``/ U``) warn
(:class:`~recompose.errors.ApproximationWarning`) when the expression is built.

**Precision and device.** The network runs in its own dtype and device (fp16 / bf16 weights are
fine); inputs are cast to it and outputs back, and the samplers' arithmetic stays float32
(:func:`~recompose.models.base.model_device_dtype`).

**Pipelines** (:func:`from_pretrained`): a ``save_pretrained`` folder or hub id, with ``unet/``,
``scheduler/`` and optionally ``text_encoder/`` + ``tokenizer/`` and ``vae/``, or an SD3 / FLUX
pipeline (loaded whole, :func:`from_pipeline`). With a VAE the model lives in latent space
(``event_shape`` = the latents'), and :meth:`DiffusersModel.decode` maps samples to images in
``[−1, 1]`` (``vae.decode(z / scaling_factor + shift_factor)``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import CapabilityError
from ..models.parameterization import EnergyModel, ScoreModel
from ..schedules import DiscreteSchedule, Levels, RectifiedFlowSchedule, Schedule, VESchedule
from ..utils import append_dims

__all__ = ["from_diffusers", "from_pretrained", "from_pipeline", "scheduler_path",
           "scheduler_levels", "DiffusersModel", "DiffusersEnergyModel", "NetworkAdapter",
           "SchedulerPath", "require_diffusers"]

# diffusers' prediction_type -> recompose's prediction (recompose.models.predictions)
PREDICTION_TYPES = {"epsilon": "epsilon", "v_prediction": "v", "sample": "x0"}
_F64 = torch.float64


def require_diffusers() -> None:
    """Raise one clear ImportError when the optional extra is missing."""
    try:
        import diffusers  # noqa: F401
    except ImportError:
        raise ImportError('the diffusers backend needs the optional extra: pip install -e '
                          '".[diffusers]" (diffusers, transformers)') from None


# ----------------------------------------------------------------- the scheduler's path
@dataclass(frozen=True)
class SchedulerPath:
    """What a scheduler says about its network: the path, what the network's output means on
    it (after EDM's preconditioning), the timestep it is called with, and its input scaling.

    ``kind``: ``"discrete"`` (a DDPM table, timestep ``k``), ``"flow"`` (flow matching,
    timestep ``σ N``), ``"edm"`` (EDM preconditioning, timestep ``¼ log σ``)."""

    schedule: Schedule
    prediction: str
    kind: str
    num_train_timesteps: int = 1000
    sigma_data: float = 0.5
    edm_sign: float = 1.0  # EDM: c_out's sign (−1 for v_prediction)

    def timestep(self, t: Tensor) -> Tensor:
        """The network's timestep input, float32 ``(B,)``, as the scheduler computes it (flow
        and EDM in float32 from float32 ``σ``, so it equals ``scheduler.timesteps``)."""
        if self.kind == "discrete":
            return self.schedule.timestep(t).to(torch.float32)
        sigma = self.schedule.alpha_sigma(t.to(_F64))[1].to(torch.float32)
        if self.kind == "flow":
            return sigma * float(self.num_train_timesteps)
        return 0.25 * torch.log(sigma)

    def network_input(self, x: Tensor, t: Tensor) -> Tensor:
        """EDM's ``c_in x`` with ``c_in = 1/√(σ² + σ_d²)``; ``x`` otherwise."""
        if self.kind != "edm":
            return x
        sigma = self.schedule.alpha_sigma(t.to(_F64))[1]
        return x * append_dims((sigma**2 + self.sigma_data**2).rsqrt().to(x.dtype), x.ndim)

    def output(self, out: Tensor, x: Tensor, t: Tensor) -> Tensor:
        """EDM's ``x̂₀ = c_skip x + c_out F``; the network's output otherwise."""
        if self.kind != "edm":
            return out
        sigma, sd2 = self.schedule.alpha_sigma(t.to(_F64))[1], self.sigma_data**2
        c_skip = sd2 / (sigma**2 + sd2)
        c_out = self.edm_sign * sigma * self.sigma_data / (sigma**2 + sd2).sqrt()
        return (append_dims(c_skip.to(x.dtype), x.ndim) * x
                + append_dims(c_out.to(x.dtype), x.ndim) * out)


def flow_shift(config: object, image_seq_len: int | None) -> float:
    """A flow-matching scheduler's shift ``s`` (``σ = s u/(1 + (s − 1) u)``): its ``shift``,
    or with ``use_dynamic_shifting`` the SD3 / FLUX pipelines' resolution-dependent ``μ``
    (linear in the number of image tokens between ``base_image_seq_len`` and
    ``max_image_seq_len``): ``s = e^μ`` (exponential time shift) or ``μ`` (linear)."""
    if not getattr(config, "use_dynamic_shifting", False):
        return float(config.shift)
    if image_seq_len is None:
        raise ValueError("this scheduler shifts its noise levels by the image size "
                         "(use_dynamic_shifting): give image_seq_len= (the number of image "
                         "tokens the transformer sees)")
    slope = (config.max_shift - config.base_shift) / (config.max_image_seq_len
                                                       - config.base_image_seq_len)
    mu = image_seq_len * slope + config.base_shift - slope * config.base_image_seq_len
    return math.exp(mu) if getattr(config, "time_shift_type", "exponential") == "exponential" \
        else mu


def scheduler_path(scheduler: object, image_seq_len: int | None = None) -> SchedulerPath:
    """The path of a diffusers scheduler (module docstring): a DDPM table (any scheduler with
    ``alphas_cumprod``), ``FlowMatchEulerDiscreteScheduler`` or ``EDMEulerScheduler``."""
    config, name = scheduler.config, type(scheduler).__name__
    if name.startswith("FlowMatch"):
        for option in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas",
                       "shift_terminal", "invert_sigmas", "stochastic_sampling"):
            if getattr(config, option, None):
                raise ValueError(f"{name} with {option} is not supported: its noise levels "
                                 "are no longer the shifted flow path")
        return SchedulerPath(RectifiedFlowSchedule(flow_shift(config, image_seq_len)), "flow",
                             "flow", int(config.num_train_timesteps))
    if name.startswith("EDM"):
        if config.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"unknown EDM prediction_type {config.prediction_type!r}")
        return SchedulerPath(VESchedule(config.sigma_min, config.sigma_max, config.sigma_data),
                             "x0", "edm",
                             int(config.num_train_timesteps), float(config.sigma_data),
                             -1.0 if config.prediction_type == "v_prediction" else 1.0)
    if not hasattr(scheduler, "alphas_cumprod"):
        raise TypeError(f"scheduler must be a diffusers scheduler with alphas_cumprod, a "
                        f"FlowMatchEulerDiscreteScheduler or an EDMEulerScheduler, got {name}")
    prediction = getattr(config, "prediction_type", "epsilon")
    if prediction not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction_type {prediction!r}; diffusers uses "
                         f"{', '.join(PREDICTION_TYPES)}")
    return SchedulerPath(DiscreteSchedule(scheduler.alphas_cumprod),
                         PREDICTION_TYPES[prediction], "discrete",
                         len(scheduler.alphas_cumprod))


def scheduler_levels(model: ScoreModel, scheduler: object) -> Levels:
    """The scheduler's own inference steps (after ``scheduler.set_timesteps(…)``) as levels on
    ``model``'s path, for ``rc.sample(model, n, "ode", num_levels=…)``: the scheduler's sigmas
    (flow matching, EDM) or timesteps (DDPM tables). A flow's first step at ``σ = 1`` is pure
    noise: only the ``"ode"`` sampler starts there."""
    schedule = model.schedule
    if hasattr(scheduler, "sigmas") and not isinstance(schedule, DiscreteSchedule):
        sigmas = scheduler.sigmas.to(_F64)
        if float(sigmas[-1]) != 0.0:
            raise ValueError("the scheduler's last noise level is not 0; recompose's samplers "
                             "always end at the clean data")
        # the path's own range of σ (a float32 table may round just past its ends)
        lo, hi = schedule.alpha_sigma(torch.tensor([0.0, 1.0], dtype=_F64))[1].tolist()
        t = schedule.time_of(sigmas[:-1].flip(0).clamp(lo, hi))
    else:
        t = (scheduler.timesteps.to(_F64).flip(0) + 1) / schedule.num_timesteps
    return schedule.levels_at(t)


# ----------------------------------------------------------------- the network
def _network_kind(network: nn.Module) -> str:
    """How a network is called: ``"flux"`` (``FluxTransformer2DModel``: packed latents),
    ``"sd3"`` (``SD3Transformer2DModel``: joint attention, pooled projections) or ``"unet"``."""
    name = type(network).__name__
    return "flux" if name.startswith("Flux") else "sd3" if name.startswith("SD3") else "unet"


class NetworkAdapter(nn.Module):
    """``f(x, t[, c])`` in recompose's convention (``t ∈ [0, 1]``; the output is the prediction
    named by :attr:`path`) from a diffusers UNet or transformer; also the condition protocol of
    conditional networks (module docstring, *Conditions*)."""

    def __init__(self, network: nn.Module, path: SchedulerPath,
                 encode_prompt: Callable[[list[str]], tuple[Tensor, Tensor | None]] | None = None,
                 null_condition: Tensor | tuple[Tensor, Tensor] | None = None,
                 raw: bool = False,
                 guidance_scale: float | None = None) -> None:
        super().__init__()
        self.network, self.path, self.raw = network, path, raw
        self.schedule = path.schedule
        self.encode_prompt = encode_prompt
        self.call = _network_kind(network)
        config = network.config
        self.conditional = (self.call != "unet"
                            or getattr(config, "cross_attention_dim", None) is not None)
        self.guidance_distilled = bool(getattr(config, "guidance_embeds", False))
        self.guidance_scale = guidance_scale if self.guidance_distilled else None
        self.condition_ndim = 2 if self.call == "unet" else 1
        self.embed_shape: tuple[int, ...] | None = None  # (L, D) of a joint condition
        if self.conditional and null_condition is None:
            if encode_prompt is None:
                raise CapabilityError(
                    "a text-conditioned network needs the null (empty-prompt) condition: give "
                    "text_encoder= and tokenizer= (or load the pipeline with rc.from_pretrained"
                    "), or null_embeds= (the encoder's output for '': (L, D) for a UNet, "
                    "(embeds, pooled) for a transformer)")
            null_condition = self._encode([""])[0]
        elif isinstance(null_condition, tuple):  # a transformer's (embeds, pooled)
            null_condition = self.encode_condition(null_condition)
        self.register_buffer("null_embeds", None if null_condition is None
                             else torch.as_tensor(null_condition, dtype=torch.float32), False)

    # ------------------------------------------------------------ conditions
    def _encode(self, prompts: list[str]) -> Tensor:
        embeds, pooled = self.encode_prompt(prompts)
        if self.call == "unet":
            return embeds
        self.embed_shape = tuple(embeds.shape[1:])
        return torch.cat([embeds.flatten(1), pooled], 1)  # one flat condition per prompt

    def encode_condition(self, value: object) -> Tensor:
        """A condition from prompt strings or embeddings: ``(L, D)`` / ``(B, L, D)`` for a
        UNet; for a transformer one flat vector per prompt, ``[embeds.flatten(), pooled]``
        (or the pair ``(embeds, pooled)`` given as a tuple)."""
        if isinstance(value, str) or (isinstance(value, Sequence) and value
                                      and all(isinstance(v, str) for v in value)):
            if self.encode_prompt is None:
                raise CapabilityError("prompt strings need a text encoder: load the pipeline "
                                      "with rc.from_pretrained, or pass prompt embeddings")
            single = isinstance(value, str)
            c = self._encode([value] if single else list(value))
            return c[0] if single else c
        if isinstance(value, tuple) and len(value) == 2 and self.call != "unet":
            embeds, pooled = (torch.as_tensor(v, dtype=torch.float32) for v in value)
            single = embeds.ndim == 2  # one condition (L, D) + (P,), else one per chain
            if single:
                embeds, pooled = embeds[None], pooled[None]
            self.embed_shape = tuple(embeds.shape[1:])
            c = torch.cat([embeds.flatten(1), pooled], 1)
            return c[0] if single else c
        c = torch.as_tensor(value, dtype=torch.float32)
        want = tuple(self.null_embeds.shape)
        if c.ndim not in (len(want), len(want) + 1) or tuple(c.shape[-len(want):]) != want:
            shown = ", ".join(map(str, want))
            raise ValueError(f"conditions must have shape ({shown}) or (B, {shown}), got "
                             f"{tuple(c.shape)}")
        return c

    def null_condition(self, n: int) -> Tensor:
        """The null condition (the empty prompt's embeddings) for ``n`` chains."""
        return self.null_embeds.expand((n,) + tuple(self.null_embeds.shape))

    # ------------------------------------------------------------ network call
    def forward(self, x: Tensor, t: Tensor, c: Tensor | None = None) -> Tensor:
        dtype = self.network.dtype
        timestep = self.path.timestep(t).to(x.device)
        if self.conditional and c is None:  # the null view p_t(x)
            c = self.null_condition(x.shape[0])
        x_in = self.path.network_input(x, t).to(dtype)
        c = None if c is None else c.to(x.device, dtype)
        if self.call == "unet":
            extra = {} if c is None else {"encoder_hidden_states": c}
            out = self.network(x_in, timestep, return_dict=False, **extra)[0]
        else:
            out = self._joint(x_in, timestep, c)
        out = out.to(x.dtype)
        if out.shape[1] == 2 * x.shape[1]:  # learned variance: keep the mean's channels
            out = out[:, : x.shape[1]]
        return out if self.raw else self.path.output(out, x, t)

    def _split(self, c: Tensor) -> tuple[Tensor, Tensor]:
        if self.embed_shape is None:
            raise CapabilityError("this transformer's conditions were never encoded here; give "
                                  "prompt strings or the pair (prompt_embeds, pooled)")
        n = math.prod(self.embed_shape)
        return c[:, :n].reshape((c.shape[0], *self.embed_shape)), c[:, n:]

    def _joint(self, x: Tensor, timestep: Tensor, c: Tensor) -> Tensor:
        """SD3 / FLUX transformers: joint attention over text and image tokens."""
        embeds, pooled = self._split(c)
        if self.call == "sd3":
            return self.network(hidden_states=x, timestep=timestep, encoder_hidden_states=embeds,
                                pooled_projections=pooled, return_dict=False)[0]
        b, ch, h, w = x.shape
        guidance = None
        if self.guidance_distilled:
            guidance = torch.full((b,), float(self.guidance_scale), device=x.device,
                                  dtype=torch.float32)
        # the FLUX pipeline casts the timestep to the latents' dtype before dividing by 1000
        out = self.network(hidden_states=pack_latents(x), timestep=timestep.to(x.dtype) / 1000,
                           guidance=guidance, pooled_projections=pooled,
                           encoder_hidden_states=embeds,
                           txt_ids=torch.zeros(embeds.shape[1], 3, device=x.device, dtype=x.dtype),
                           img_ids=latent_ids(h, w, x.device, x.dtype), return_dict=False)[0]
        return unpack_latents(out, h, w)


def pack_latents(x: Tensor) -> Tensor:
    """FLUX's packing: ``(B, C, H, W) -> (B, H/2·W/2, 4C)`` (2×2 patches as tokens)."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(
        b, (h // 2) * (w // 2), 4 * c)


def unpack_latents(tokens: Tensor, h: int, w: int) -> Tensor:
    """The inverse of :func:`pack_latents`."""
    b, _, d = tokens.shape
    return tokens.reshape(b, h // 2, w // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(
        b, d // 4, h, w)


def latent_ids(h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """FLUX's image-token positions ``(H/2·W/2, 3)``: ``(0, row, column)``."""
    rows = torch.arange(h // 2, device=device, dtype=dtype)[:, None].expand(h // 2, w // 2)
    cols = torch.arange(w // 2, device=device, dtype=dtype)[None, :].expand(h // 2, w // 2)
    return torch.stack([torch.zeros_like(rows), rows, cols], -1).reshape(-1, 3)


class _Pipeline:
    """What a loaded pipeline adds to the model: the VAE decoder and the prompt encoder."""

    vae: nn.Module | None
    net: NetworkAdapter

    @property
    def guidance_distilled(self) -> bool:
        """Whether the transformer was distilled from guidance (FLUX-dev style, a guidance
        embedding): its empty-prompt view is not an unconditional density."""
        return self.net.guidance_distilled

    def decode(self, x: Tensor) -> Tensor:
        """Samples to images in ``[−1, 1]``: the VAE's decoder for latents, else ``x``."""
        if self.vae is None:
            return x
        config = self.vae.config
        z = x / config.scaling_factor + (getattr(config, "shift_factor", None) or 0.0)
        with torch.no_grad():
            images = self.vae.decode(z.to(self.vae.dtype), return_dict=False)[0]
        return images.to(x.dtype).clamp(-1, 1)

    def prompt(self, text: str, name: str | None = None) -> ScoreModel:
        """``p_t(x | text)``: the same as ``model.given(text)``."""
        return self.given(text, name=name or text)


class DiffusersModel(_Pipeline, ScoreModel):
    """A diffusers UNet or transformer as a score model (see the module docstring)."""

    def __init__(self, net: NetworkAdapter, event_shape: tuple[int, ...], vae: nn.Module | None,
                 name: str | None) -> None:
        ScoreModel.__init__(self, net, net.schedule, event_shape, name=name,
                            prediction=net.path.prediction)
        self.vae = vae


class DiffusersEnergyModel(_Pipeline, EnergyModel):
    """A diffusers UNet read as an energy head ``U = ‖f − x‖²`` (see the module docstring)."""

    def __init__(self, net: NetworkAdapter, event_shape: tuple[int, ...], vae: nn.Module | None,
                 form: str, name: str | None) -> None:
        EnergyModel.__init__(self, net, net.schedule, event_shape, form=form, name=name)
        self.vae = vae


def prompt_encoder(text_encoder: nn.Module, tokenizer: object
                   ) -> Callable[[list[str]], tuple[Tensor, None]]:
    """``prompts -> ((B, L, D), None)`` float32 embeddings: padded to the tokenizer's maximum
    length, the text encoder's last hidden state (Stable Diffusion's conditioning)."""

    def encode(prompts: list[str]) -> tuple[Tensor, None]:
        tokens = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length,
                           truncation=True, return_tensors="pt")
        device = next(text_encoder.parameters()).device
        with torch.no_grad():
            out = text_encoder(tokens.input_ids.to(device), return_dict=False)[0]
        return out.to(torch.float32), None

    return encode


def pipeline_encoder(pipe: object, max_sequence_length: int | None = None
                     ) -> Callable[[list[str]], tuple[Tensor, Tensor]]:
    """``prompts -> ((B, L, D), (B, P))`` through an SD3 / FLUX pipeline's own
    ``encode_prompt`` (CLIP and T5; prompt embeddings and pooled projections)."""
    options = {} if max_sequence_length is None else {"max_sequence_length":
                                                      max_sequence_length}
    flux = _network_kind(pipe.transformer) == "flux"

    def encode(prompts: list[str]) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            if flux:
                embeds, pooled, _ = pipe.encode_prompt(prompts, prompt_2=None, **options)
            else:
                embeds, _, pooled, _ = pipe.encode_prompt(
                    prompts, prompt_2=None, prompt_3=None, do_classifier_free_guidance=False,
                    **options)
        return embeds.to(torch.float32), pooled.to(torch.float32)

    return encode


def _event_shape(network: nn.Module, sample_size: int | tuple[int, int] | None
                 ) -> tuple[int, ...]:
    size = sample_size or getattr(network.config, "sample_size", None)
    if size is None:
        raise ValueError(f"{type(network).__name__} has no sample_size in its config: give "
                         "sample_size= (the latent height and width)")
    size = (size, size) if isinstance(size, int) else tuple(size)
    channels = int(network.config.in_channels)
    if _network_kind(network) == "flux":  # packed 2×2 tokens: 4 channels each
        channels //= 4
    return (channels, *map(int, size))


def _image_tokens(network: nn.Module, event_shape: tuple[int, ...]) -> int:
    patch = 2 if _network_kind(network) == "flux" else int(
        getattr(network.config, "patch_size", 1) or 1)
    return (event_shape[1] // patch) * (event_shape[2] // patch)


def from_diffusers(network: nn.Module, scheduler: object, *,
                   text_encoder: nn.Module | None = None, tokenizer: object | None = None,
                   null_embeds: Tensor | tuple[Tensor, Tensor] | None = None,
                   vae: nn.Module | None = None,
                   parameterization: str = "score", energy_form: str = "ae",
                   sample_size: int | tuple[int, int] | None = None,
                   encode_prompt: Callable[[list[str]], tuple[Tensor, Tensor | None]] | None
                   = None, guidance_scale: float = 3.5, name: str | None = None
                   ) -> DiffusersModel | DiffusersEnergyModel:
    """A diffusers network and its scheduler as a recompose model, in eval mode.

    Args:
        network: ``UNet2DModel``, ``UNet2DConditionModel``, ``SD3Transformer2DModel`` or
            ``FluxTransformer2DModel``; its dtype and device are kept.
        scheduler: a scheduler with ``alphas_cumprod`` (DDPM, DDIM, Euler…; its
            ``prediction_type`` says what the network predicts), a
            ``FlowMatchEulerDiscreteScheduler`` (``shift``, or dynamic shifting by the image
            size) or an ``EDMEulerScheduler`` (EDM preconditioning).
        text_encoder: with ``tokenizer``, turns prompt strings into conditions (conditional
            UNets).
        tokenizer: the text encoder's tokenizer.
        null_embeds: the null condition when no encoder is given: ``(L, D)`` for a UNet, the
            pair ``(embeds (L, D), pooled (P,))`` for a transformer.
        vae: the latent pipeline's autoencoder (for :meth:`DiffusersModel.decode`).
        parameterization: ``"score"`` or ``"energy"`` (the UNet is an energy head, see above).
        energy_form: ``"ae"`` (``U = ‖f − x‖²``) or ``"l2"`` (``½‖f‖²``) for energy heads.
        sample_size: latent height and width (default: the network config's ``sample_size``).
        encode_prompt: ``prompts -> (embeds (B, L, D), pooled (B, P) or None)``, e.g. an
            SD3 / FLUX pipeline's (:func:`pipeline_encoder`).
        guidance_scale: the guidance embedding's value for guidance-distilled transformers
            (FLUX-dev; the pipeline's default 3.5).
        name: shown in descriptions and plots.
    """
    require_diffusers()
    if parameterization not in ("score", "energy"):
        raise ValueError(f"parameterization must be 'score' or 'energy', got "
                         f"{parameterization!r}")
    if (text_encoder is None) != (tokenizer is None):
        raise ValueError("give both text_encoder and tokenizer, or neither")
    event_shape = _event_shape(network, sample_size)
    path = scheduler_path(scheduler, _image_tokens(network, event_shape))
    if parameterization == "energy" and path.prediction != "epsilon":
        raise ValueError("an energy head is trained in the ε parameterisation (∇U = ε̂); its "
                         f"scheduler says {path.kind} with a {path.prediction} prediction")
    if encode_prompt is None and text_encoder is not None:
        encode_prompt = prompt_encoder(text_encoder.eval(), tokenizer)
    net = NetworkAdapter(network.eval(), path, encode_prompt, null_embeds,
                         raw=parameterization == "energy", guidance_scale=guidance_scale)
    if vae is not None:
        vae = vae.eval()
    if parameterization == "energy":
        return DiffusersEnergyModel(net, event_shape, vae, energy_form, name).eval()
    return DiffusersModel(net, event_shape, vae, name).eval()


def _model_index(path_or_id: str | Path) -> dict:
    from diffusers import DiffusionPipeline

    local = Path(path_or_id)
    if local.is_dir():
        index = local / "model_index.json"
        if not index.is_file():
            raise FileNotFoundError(f"{local} has no model_index.json: give a folder written "
                                    "by a pipeline's save_pretrained (or a hub id)")
        return json.loads(index.read_text())
    return DiffusionPipeline.load_config(str(path_or_id))  # a hub id (needs the network once)


def from_pipeline(pipe: object, *, height: int | None = None, width: int | None = None,
                  max_sequence_length: int | None = None, guidance_scale: float = 3.5,
                  name: str | None = None) -> DiffusersModel:
    """An SD3 / FLUX pipeline object (``StableDiffusion3Pipeline``, ``FluxPipeline``) as a
    model in its latent space: the transformer, the scheduler's path, prompts through the
    pipeline's own ``encode_prompt``, and the VAE for :meth:`DiffusersModel.decode`.
    ``height``, ``width``: the image size in pixels (default: the pipeline's)."""
    require_diffusers()
    factor = int(getattr(pipe, "vae_scale_factor", 8))
    default = int(getattr(pipe, "default_sample_size", None)
                  or getattr(pipe.transformer.config, "sample_size", 128))
    h, w = (height or default * factor) // factor, (width or default * factor) // factor
    if _network_kind(pipe.transformer) == "flux":
        h, w = 2 * (h // 2), 2 * (w // 2)  # FLUX packs 2×2 latent patches
    return from_diffusers(pipe.transformer, pipe.scheduler, vae=pipe.vae, sample_size=(h, w),
                          encode_prompt=pipeline_encoder(pipe, max_sequence_length),
                          guidance_scale=guidance_scale,
                          name=name or type(pipe).__name__.removesuffix("Pipeline"))


def from_pretrained(path_or_id: str | Path, *, torch_dtype: torch.dtype | None = None,
                    device: str | torch.device | None = None, parameterization: str = "score",
                    height: int | None = None, width: int | None = None,
                    max_sequence_length: int | None = None, guidance_scale: float = 3.5,
                    name: str | None = None) -> DiffusersModel | DiffusersEnergyModel:
    """Load a pipeline folder (``save_pretrained``) or hub id.

    A UNet pipeline: ``unet``, ``scheduler`` and, when present, ``text_encoder`` +
    ``tokenizer`` and ``vae`` (other parts, e.g. a safety checker, are not loaded). An SD3 or
    FLUX pipeline (a ``transformer``): loaded whole by diffusers, then :func:`from_pipeline`
    (``max_sequence_length`` and ``guidance_scale`` apply there). ``height``, ``width``: the
    image size in pixels (default: the pipeline's)."""
    require_diffusers()
    from diffusers import AutoencoderKL, UNet2DConditionModel, UNet2DModel

    index = _model_index(path_or_id)
    parts = {k for k, v in index.items() if not k.startswith("_") and isinstance(v, list)
             and v[0] is not None}
    src, kw = str(path_or_id), {} if torch_dtype is None else {"torch_dtype": torch_dtype}
    name = name or Path(src).name
    if "transformer" in parts:
        from diffusers import DiffusionPipeline

        if parameterization != "score":
            raise ValueError("SD3 / FLUX transformers are score (velocity) models; "
                             "parameterization='energy' applies to UNet energy heads")
        pipe = DiffusionPipeline.from_pretrained(src, **kw)
        if device is not None:
            pipe = pipe.to(device)
        return from_pipeline(pipe, height=height, width=width,
                             max_sequence_length=max_sequence_length,
                             guidance_scale=guidance_scale, name=name)
    if "unet" not in parts or "scheduler" not in parts:
        raise ValueError(f"{path_or_id}: a pipeline needs unet/ (or transformer/) and "
                         f"scheduler/ (found {', '.join(sorted(parts)) or 'nothing'})")
    unet_class = UNet2DConditionModel if index["unet"][1] == "UNet2DConditionModel" \
        else UNet2DModel
    unet = unet_class.from_pretrained(src, subfolder="unet", **kw)
    scheduler = _load_scheduler(src, index["scheduler"][1])
    text_encoder = tokenizer = vae = None
    if "text_encoder" in parts and "tokenizer" in parts:
        import transformers

        text_encoder = getattr(transformers, index["text_encoder"][1]).from_pretrained(
            src, subfolder="text_encoder", **kw)
        tokenizer = getattr(transformers, index["tokenizer"][1]).from_pretrained(
            src, subfolder="tokenizer")
    if "vae" in parts:
        vae = AutoencoderKL.from_pretrained(src, subfolder="vae", **kw)
    if device is not None:
        unet, text_encoder, vae = (m if m is None else m.to(device)
                                   for m in (unet, text_encoder, vae))
    size = None
    if height or width:  # pixels -> latents (the VAE halves the size per extra block)
        factor = 1 if vae is None else 2 ** (len(vae.config.block_out_channels) - 1)
        default = unet.config.sample_size * factor
        size = ((height or default) // factor, (width or default) // factor)
    return from_diffusers(unet, scheduler, text_encoder=text_encoder, tokenizer=tokenizer,
                          vae=vae, parameterization=parameterization, sample_size=size,
                          name=name)


def _load_scheduler(src: str, class_name: str) -> object:
    """The folder's scheduler: flow matching and EDM as themselves; any other scheduler's
    config read as a DDPM one (only its training table and prediction_type are used)."""
    import diffusers

    if class_name.startswith(("FlowMatch", "EDM")):
        return getattr(diffusers, class_name).from_pretrained(src, subfolder="scheduler")
    return diffusers.DDPMScheduler.from_pretrained(src, subfolder="scheduler")
