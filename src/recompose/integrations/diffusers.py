r"""diffusers models in the algebra: a UNet and its scheduler as a :class:`DiffusionModel`.

Requires the optional extra ``pip install -e ".[diffusers]"`` (diffusers, transformers); nothing
else in recompose imports this module.

**Schedule.** A diffusers scheduler trained a DDPM on ``N`` timesteps with table
``ᾱ_k = scheduler.alphas_cumprod[k]``. Its :class:`~recompose.schedules.DiscreteSchedule` puts
timestep ``k`` at ``t = (k + 1)/N`` (exact there; ``log ᾱ`` linear in ``t`` in between), and the
UNet is called with the timestep ``k = N t − 1``. At the trained timesteps (``num_levels``
dividing ``N``) this is the integer the model was trained on; between them the UNet sees a
fractional timestep (its sinusoidal embedding is defined there, but was never trained on it).

**Prediction types** (``scheduler.config.prediction_type``), with ``x_t = α x₀ + σ ε``:
``"epsilon"`` (``ε̂ = f``), ``"v_prediction"`` (``v = α ε − σ x₀``) and ``"sample"``
(``x̂₀ = f``), converted to ``ε̂`` by :mod:`recompose.models.predictions` (recompose's ``v`` and
``x0``) on the model's path. The score is ``s = −ε̂/σ`` (shape of ``x``). A UNet with a
learned variance (``2C`` output channels) gives its first ``C`` channels; the variance is not
used (our DDPM step uses the posterior variance ``β̃``, diffusers' ``"fixed_small"``).

**Energies.** ``parameterization="energy"`` reads the UNet as an energy head ``f`` with
``U = ‖f − x‖²`` (or ``½‖f‖²``), ``E = U/σ_t`` (:class:`~recompose.models.parameterization.
EnergyModel`): a UNet trained (or distilled) in that parameterisation gives energies, so MALA,
HMC and SMC run on it. A score UNet runs them with ``energy="path"``.

**Conditions.** A ``UNet2DConditionModel`` takes ``encoder_hidden_states`` of shape ``(L, D)``
per sample. ``model.given(c)`` is ``p_t(x | c)`` for prompt embeddings ``c`` (``(L, D)``, or one
per chain ``(B, L, D)``) or, with a text encoder, a prompt string; ``model`` itself is the
null (empty-prompt) view. A product or classifier-free guidance over prompts is one UNet call per
step on the stacked batch, as for recompose's own conditional networks.

**Precision and device.** The UNet runs in its own dtype and device (fp16 / bf16 weights are
fine); inputs are cast to it and outputs back, and the samplers' arithmetic stays float32
(:func:`~recompose.models.base.model_device_dtype`).

**Pipelines** (:func:`from_pretrained`): a ``save_pretrained`` folder or hub id with ``unet/``,
``scheduler/`` and optionally ``text_encoder/`` + ``tokenizer/`` and ``vae/``. With a VAE the
model lives in latent space (``event_shape`` = the latents'), and :meth:`DiffusersModel.decode`
maps samples to images in ``[−1, 1]`` (``vae.decode(z / scaling_factor)``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import CapabilityError
from ..models.parameterization import EnergyModel, ScoreModel
from ..models.predictions import get_prediction
from ..schedules import DiscreteSchedule

__all__ = ["from_diffusers", "from_pretrained", "DiffusersModel", "DiffusersEnergyModel",
           "UNetAdapter", "require_diffusers"]

# diffusers' prediction_type -> recompose's prediction (recompose.models.predictions)
PREDICTION_TYPES = {"epsilon": "epsilon", "v_prediction": "v", "sample": "x0"}


def require_diffusers() -> None:
    """Raise one clear ImportError when the optional extra is missing."""
    try:
        import diffusers  # noqa: F401
    except ImportError:
        raise ImportError('the diffusers backend needs the optional extra: pip install -e '
                          '".[diffusers]" (diffusers, transformers)') from None


class UNetAdapter(nn.Module):
    """``f(x, t[, c])`` in recompose's convention (``t ∈ [0, 1]``, ε-prediction unless it is an
    energy head) from a diffusers UNet; also the condition protocol of conditional networks."""

    condition_ndim = 2  # one condition = prompt embeddings (L, D)

    def __init__(self, unet: nn.Module, schedule: DiscreteSchedule, prediction_type: str,
                 encode_prompt: Callable[[list[str]], Tensor] | None = None,
                 null_embeds: Tensor | None = None, raw: bool = False) -> None:
        super().__init__()
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unknown prediction_type {prediction_type!r}; diffusers uses "
                             f"{', '.join(PREDICTION_TYPES)}")
        self.unet, self.schedule, self.prediction_type = unet, schedule, prediction_type
        self.encode_prompt, self.raw = encode_prompt, raw
        self.conditional = getattr(unet.config, "cross_attention_dim", None) is not None
        if self.conditional and null_embeds is None:
            if encode_prompt is None:
                raise CapabilityError(
                    "a text-conditioned UNet needs the null (empty-prompt) condition: give "
                    "text_encoder= and tokenizer=, or null_embeds= (the encoder's output for "
                    "'', shape (L, D))")
            null_embeds = encode_prompt([""])[0]
        self.register_buffer("null_embeds", None if null_embeds is None
                             else torch.as_tensor(null_embeds, dtype=torch.float32), False)

    # ------------------------------------------------------------ conditions
    def encode_condition(self, value: object) -> Tensor:
        """Prompt embeddings ``(L, D)`` or ``(B, L, D)`` from embeddings or prompt strings."""
        if isinstance(value, str) or (isinstance(value, Sequence) and value
                                      and all(isinstance(v, str) for v in value)):
            if self.encode_prompt is None:
                raise CapabilityError("prompt strings need a text encoder: load the pipeline "
                                      "with rc.from_pretrained, or pass prompt embeddings")
            single = isinstance(value, str)
            embeds = self.encode_prompt([value] if single else list(value))
            return embeds[0] if single else embeds
        c = torch.as_tensor(value, dtype=torch.float32)
        if c.ndim not in (2, 3) or c.shape[-1] != self.null_embeds.shape[-1]:
            raise ValueError(f"prompt embeddings must have shape (L, {self.null_embeds.shape[-1]})"
                             f" or (B, L, {self.null_embeds.shape[-1]}), got {tuple(c.shape)}")
        return c

    def null_condition(self, n: int) -> Tensor:
        return self.null_embeds.expand((n,) + tuple(self.null_embeds.shape))

    # ------------------------------------------------------------ network call
    def forward(self, x: Tensor, t: Tensor, c: Tensor | None = None) -> Tensor:
        dtype = self.unet.dtype
        timestep = self.schedule.timestep(t).to(torch.float32)
        if self.conditional and c is None:  # the null view p_t(x)
            c = self.null_condition(x.shape[0])
        extra = {} if c is None else {"encoder_hidden_states": c.to(x.device, dtype)}
        out = self.unet(x.to(dtype), timestep.to(x.device), return_dict=False, **extra)[0]
        out = out.to(x.dtype)
        if out.shape[1] == 2 * x.shape[1]:  # learned variance: keep the mean's channels
            out = out[:, : x.shape[1]]
        if self.raw or self.prediction_type == "epsilon":
            return out
        prediction = get_prediction(PREDICTION_TYPES[self.prediction_type])
        return prediction.to_epsilon(out, x, t.to(x.dtype), self.schedule)


class _Pipeline:
    """What a loaded pipeline adds to the model: the VAE decoder and the prompt encoder."""

    vae: nn.Module | None

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
    """A diffusers UNet as a score model (see the module docstring)."""

    def __init__(self, net: UNetAdapter, event_shape: tuple[int, ...], vae: nn.Module | None,
                 name: str | None) -> None:
        ScoreModel.__init__(self, net, net.schedule, event_shape, name=name)
        self.vae = vae


class DiffusersEnergyModel(_Pipeline, EnergyModel):
    """A diffusers UNet read as an energy head ``U = ‖f − x‖²`` (see the module docstring)."""

    def __init__(self, net: UNetAdapter, event_shape: tuple[int, ...], vae: nn.Module | None,
                 form: str, name: str | None) -> None:
        EnergyModel.__init__(self, net, net.schedule, event_shape, form=form, name=name)
        self.vae = vae


def prompt_encoder(text_encoder: nn.Module, tokenizer: object) -> Callable[[list[str]], Tensor]:
    """``prompts -> (B, L, D)`` float32 embeddings: padded to the tokenizer's maximum length,
    the text encoder's last hidden state (Stable Diffusion's conditioning)."""

    def encode(prompts: list[str]) -> Tensor:
        tokens = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length,
                           truncation=True, return_tensors="pt")
        device = next(text_encoder.parameters()).device
        with torch.no_grad():
            out = text_encoder(tokens.input_ids.to(device), return_dict=False)[0]
        return out.to(torch.float32)

    return encode


def from_diffusers(unet: nn.Module, scheduler: object, *, text_encoder: nn.Module | None = None,
                   tokenizer: object | None = None, null_embeds: Tensor | None = None,
                   vae: nn.Module | None = None, parameterization: str = "score",
                   energy_form: str = "ae", sample_size: int | None = None,
                   name: str | None = None) -> DiffusersModel | DiffusersEnergyModel:
    """A diffusers UNet (``UNet2DModel`` or ``UNet2DConditionModel``) and its scheduler as a
    recompose model, in eval mode.

    Args:
        unet: the network; its dtype and device are kept.
        scheduler: any diffusers scheduler with ``alphas_cumprod`` (its ``prediction_type`` says
            what the UNet predicts).
        text_encoder, tokenizer: turn prompt strings into conditions (conditional UNets).
        null_embeds: the null condition ``(L, D)`` when no text encoder is given.
        vae: the latent pipeline's autoencoder (for :meth:`DiffusersModel.decode`).
        parameterization: ``"score"`` or ``"energy"`` (the UNet is an energy head, see above).
        energy_form: ``"ae"`` (``U = ‖f − x‖²``) or ``"l2"`` (``½‖f‖²``) for energy heads.
        sample_size: spatial size (default: the UNet config's ``sample_size``).
        name: shown in descriptions and plots.
    """
    require_diffusers()
    if not hasattr(scheduler, "alphas_cumprod"):
        raise TypeError(f"scheduler must be a diffusers scheduler with alphas_cumprod, got "
                        f"{type(scheduler).__name__}")
    if parameterization not in ("score", "energy"):
        raise ValueError(f"parameterization must be 'score' or 'energy', got "
                         f"{parameterization!r}")
    if (text_encoder is None) != (tokenizer is None):
        raise ValueError("give both text_encoder and tokenizer, or neither")
    prediction = getattr(scheduler.config, "prediction_type", "epsilon")
    if parameterization == "energy" and prediction != "epsilon":
        raise ValueError("an energy head is trained in the ε parameterisation (∇U = ε̂); its "
                         f"scheduler says prediction_type={prediction!r}")
    schedule = DiscreteSchedule(scheduler.alphas_cumprod)
    encode = None if text_encoder is None else prompt_encoder(text_encoder.eval(), tokenizer)
    net = UNetAdapter(unet.eval(), schedule, prediction, encode, null_embeds,
                      raw=parameterization == "energy")
    size = sample_size or unet.config.sample_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    event_shape = (int(unet.config.in_channels), *map(int, size))
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


def from_pretrained(path_or_id: str | Path, *, torch_dtype: torch.dtype | None = None,
                    device: str | torch.device | None = None, parameterization: str = "score",
                    name: str | None = None) -> DiffusersModel | DiffusersEnergyModel:
    """Load a pipeline folder (``save_pretrained``) or hub id: ``unet``, ``scheduler`` and,
    when present, ``text_encoder`` + ``tokenizer`` and ``vae``. Other parts (safety checker,
    feature extractor) are not loaded."""
    require_diffusers()
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel, UNet2DModel

    index = _model_index(path_or_id)
    parts = {k for k, v in index.items() if not k.startswith("_") and isinstance(v, list)
             and v[0] is not None}
    if "unet" not in parts or "scheduler" not in parts:
        raise ValueError(f"{path_or_id}: a pipeline needs unet/ and scheduler/ (found "
                         f"{', '.join(sorted(parts)) or 'nothing'})")
    src, kw = str(path_or_id), {} if torch_dtype is None else {"torch_dtype": torch_dtype}
    unet_class = UNet2DConditionModel if index["unet"][1] == "UNet2DConditionModel" \
        else UNet2DModel
    unet = unet_class.from_pretrained(src, subfolder="unet", **kw)
    # Only the training table (betas → alphas_cumprod) and prediction_type are used, so any
    # scheduler's config is read as a DDPM one.
    scheduler = DDPMScheduler.from_pretrained(src, subfolder="scheduler")
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
    return from_diffusers(unet, scheduler, text_encoder=text_encoder, tokenizer=tokenizer,
                          vae=vae, parameterization=parameterization,
                          name=name or Path(src).name)
