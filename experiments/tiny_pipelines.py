"""Tiny random-initialised diffusers pipelines for the offline agreement checks
(tests/test_flow_backends.py, ``python -m experiments.flow_backends``), built here from
configs, offline and seeded (the same ``seed`` gives the same weights; the global torch RNG is
left as it was).

* :func:`sd3_pipeline`: a ``StableDiffusion3Pipeline`` (two CLIP text encoders with projection,
  a T5 encoder, an ``SD3Transformer2DModel``, an SD3-style VAE, flow-matching Euler);
* :func:`flux_pipeline`: a ``FluxPipeline`` (CLIP pooled output, T5, a
  ``FluxTransformer2DModel`` with or without guidance embedding, dynamic shifting);
* :func:`word_tokenizer` / :func:`t5_tokenizer`: CLIP (BPE) and T5 (Unigram) tokenizers with one
  token per word of :data:`WORDS` (no sentencepiece file); :func:`save` writes a pipeline folder;
* the references the agreement checks compare with: :func:`velocity` (the transformer called as
  the pipelines call it), :func:`flow_loop` and :func:`edm_loop` (the schedulers' Euler loops
  written out in the sample's dtype: diffusers' own ``step`` casts the sample to float32).

Both pipelines use a VAE with ``vae_scale_factor`` 2 and run on 16×16 images (8×8 latents with
4 channels): call them with ``height=width=16`` (any multiple of 4 up to 32 for SD3, of 4 for
FLUX) and ``max_sequence_length=T5_TOKENS``. ``encode_prompt`` gives, per prompt,
SD3: ``prompt_embeds`` (CLIP_TOKENS + T5_TOKENS, 64), ``pooled_prompt_embeds`` (64);
FLUX: ``prompt_embeds`` (T5_TOKENS, 32), ``pooled_prompt_embeds`` (32).
"""

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

WORDS = ("red", "green", "blue", "yellow", "cube", "sphere", "a", "and", "cat", "dog")
CLIP_TOKENS = 10  # <start> + up to 8 words + <end>
T5_TOKENS = 8  # up to 7 words + </s>; pass max_sequence_length=T5_TOKENS to the pipelines


def word_tokenizer(max_length: int = CLIP_TOKENS, words: tuple = WORDS) -> CLIPTokenizer:
    """A CLIP tokenizer whose BPE merges spell each of ``words`` as one token (ids: 0 start,
    1 end = padding; letters otherwise). Each word's merges are found by running BPE with the
    merges so far and adding the first pair it cannot merge: later merges rank lower, so they
    never change an earlier word (``experiments.attributes.word_tokenizer`` splits "green":
    its merge ``r e`` from "red" outranks ``g r``)."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab[ch], vocab[ch + "</w>"] = len(vocab), len(vocab) + 1
    merges: list[tuple[str, str]] = []
    for word in words:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            pairs = list(zip(parts, parts[1:]))
            _, i = min((merges.index(p) if p in merges else len(merges), i)
                       for i, p in enumerate(pairs))
            if pairs[i] not in merges:
                merges.append(pairs[i])
                vocab[parts[i] + parts[i + 1]] = len(vocab)
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def t5_tokenizer(max_length: int = T5_TOKENS) -> T5Tokenizer:
    """A T5 (Unigram) tokenizer: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, one piece per word of
    :data:`WORDS`, single letters as fallback; no sentinel ids."""
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [("▁" + w, -1.0) for w in WORDS]
    vocab += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=max_length)


def _clip(cls: type, tokenizer: object) -> torch.nn.Module:
    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37,
                            projection_dim=32, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=CLIP_TOKENS,
                            bos_token_id=0, eos_token_id=1, pad_token_id=1)
    return cls(config).eval()


def _t5(tokenizer: T5Tokenizer, d_model: int) -> T5EncoderModel:
    config = T5Config(vocab_size=len(tokenizer), d_model=d_model, d_kv=8, d_ff=37, num_layers=1,
                      num_heads=4, relative_attention_num_buckets=8, dropout_rate=0.0,
                      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return T5EncoderModel(config).eval()


def _vae(scaling_factor: float, shift_factor: float) -> AutoencoderKL:
    """Two blocks: ``vae_scale_factor`` 2; no (post-)quant conv, like SD3's and FLUX's VAEs."""
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                         block_out_channels=(8, 8), norm_num_groups=8, sample_size=16,
                         down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2,
                         scaling_factor=scaling_factor, shift_factor=shift_factor,
                         use_quant_conv=False, use_post_quant_conv=False).eval()


def sd3_pipeline(seed: int = 0) -> StableDiffusion3Pipeline:
    """SD3: the CLIP hidden states (32 + 32) are zero-padded to the T5 width 64 and put before
    the T5 tokens, so ``joint_attention_dim`` is 64; ``pooled_projection_dim`` is the two CLIP
    projections (32 + 32). The transformer patches 2×2 (16 tokens for an 8×8 latent)."""
    tokenizer, tokenizer_3 = word_tokenizer(), t5_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = SD3Transformer2DModel(
            sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=1,
            attention_head_dim=8, num_attention_heads=2, joint_attention_dim=64,
            caption_projection_dim=16, pooled_projection_dim=64, pos_embed_max_size=8).eval()
        return StableDiffusion3Pipeline(
            transformer=transformer,
            scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
            vae=_vae(scaling_factor=1.5305, shift_factor=0.0609),
            text_encoder=_clip(CLIPTextModelWithProjection, tokenizer), tokenizer=tokenizer,
            text_encoder_2=_clip(CLIPTextModelWithProjection, tokenizer), tokenizer_2=tokenizer,
            text_encoder_3=_t5(tokenizer_3, d_model=64), tokenizer_3=tokenizer_3)


def flux_pipeline(seed: int = 0, guidance_embeds: bool = True) -> FluxPipeline:
    """FLUX: the CLIP pooled output (32) is ``pooled_projection_dim``, the T5 states (32) are
    ``joint_attention_dim``; 2×2 latent patches are packed into 16 channels (16 tokens for an
    8×8 latent). ``guidance_embeds=False`` is the schnell-like variant (no guidance input)."""
    tokenizer, tokenizer_2 = word_tokenizer(), t5_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
            attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
            pooled_projection_dim=32, guidance_embeds=guidance_embeds,
            axes_dims_rope=(4, 6, 6)).eval()
        scheduler = FlowMatchEulerDiscreteScheduler(
            shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
            base_image_seq_len=256, max_image_seq_len=4096)
        return FluxPipeline(
            transformer=transformer, scheduler=scheduler,
            vae=_vae(scaling_factor=0.3611, shift_factor=0.1159),
            text_encoder=_clip(CLIPTextModel, tokenizer), tokenizer=tokenizer,
            text_encoder_2=_t5(tokenizer_2, d_model=32), tokenizer_2=tokenizer_2)


def save(pipe: object, folder: object) -> None:
    """``pipe.save_pretrained(folder)``: ``type(pipe).from_pretrained(folder)`` loads it back."""
    pipe.save_pretrained(folder)


# ----------------------------------------------------------------- reference loops
def encode(pipe: object, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The pipeline's own prompt encoding, rounded to float32 as recompose stores conditions,
    in the transformer's dtype."""
    if isinstance(pipe, FluxPipeline):
        embeds, pooled, _ = pipe.encode_prompt(prompt, None, max_sequence_length=T5_TOKENS)
    else:
        embeds, _, pooled, _ = pipe.encode_prompt(prompt, None, None,
                                                  do_classifier_free_guidance=False,
                                                  max_sequence_length=T5_TOKENS)
    dtype = pipe.transformer.dtype
    return embeds.float().to(dtype), pooled.float().to(dtype)


def velocity(pipe: object, x: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor,
             pooled: torch.Tensor, guidance_scale: float = 3.5) -> torch.Tensor:
    """The transformer called as the SD3 / FLUX pipelines call it (``t`` from
    ``scheduler.timesteps``; FLUX packs 2×2 latent patches and gets ``t/1000`` and guidance)."""
    b, _, h, w = x.shape
    embeds, pooled = embeds.expand(b, -1, -1), pooled.expand(b, -1)
    if not isinstance(pipe, FluxPipeline):
        return pipe.transformer(hidden_states=x, timestep=t.expand(b),
                                encoder_hidden_states=embeds, pooled_projections=pooled,
                                return_dict=False)[0]
    guidance = torch.full([1], guidance_scale, dtype=torch.float32).expand(b) \
        if pipe.transformer.config.guidance_embeds else None
    out = pipe.transformer(
        hidden_states=FluxPipeline._pack_latents(x, b, x.shape[1], h, w),
        timestep=t.expand(b).to(x.dtype) / 1000, guidance=guidance, pooled_projections=pooled,
        encoder_hidden_states=embeds, txt_ids=torch.zeros(embeds.shape[1], 3, dtype=x.dtype),
        img_ids=FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, "cpu", x.dtype),
        return_dict=False)[0]
    return FluxPipeline._unpack_latents(out, 2 * h, 2 * w, 2)


def set_steps(pipe: object, steps: int) -> float | None:
    """``scheduler.set_timesteps`` as the pipelines call it for 8×8 latents (FLUX: ``mu``
    from the 16 image tokens, by the pipeline's calculate_shift); returns ``mu``."""
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    config = pipe.scheduler.config
    mu = None
    if config.use_dynamic_shifting:
        mu = calculate_shift(16, config.base_image_seq_len, config.max_image_seq_len,
                             config.base_shift, config.max_shift)
    pipe.scheduler.set_timesteps(steps, mu=mu)
    return mu


def flow_loop(pipe: object, x: torch.Tensor, embeds: torch.Tensor, pooled: torch.Tensor,
              w: float | None = None, null: tuple | None = None) -> torch.Tensor:
    """The flow-matching Euler loop written out in ``x``'s dtype (the scheduler's sigmas and
    timesteps, ``x + (σ_{k+1} − σ_k) v``); with ``w``, the pipelines' true classifier-free
    guidance ``v_∅ + w (v_c − v_∅)`` with ``null = (embeds, pooled)`` of the empty prompt."""
    sch = pipe.scheduler
    with torch.no_grad():
        for i, t in enumerate(sch.timesteps):
            v = velocity(pipe, x, t, embeds, pooled)
            if w is not None:
                v_null = velocity(pipe, x, t, *null)
                v = v_null + w * (v - v_null)
            x = x + (sch.sigmas[i + 1].to(x.dtype) - sch.sigmas[i].to(x.dtype)) * v
    return x


def edm_loop(unet: torch.nn.Module, sch: object, x: torch.Tensor) -> torch.Tensor:
    """The ``EDMEulerScheduler`` loop written out in ``x``'s dtype: its sigmas, its timesteps
    (``¼ log σ``) and its own preconditioning functions, the Euler step ``x + dσ (x − D)/σ``."""
    with torch.no_grad():
        for i, t in enumerate(sch.timesteps):
            sigma = sch.sigmas[i].to(x.dtype)
            out = unet(sch.precondition_inputs(x, sigma), t).sample
            denoised = sch.precondition_outputs(x, out, sigma)
            x = x + (sch.sigmas[i + 1].to(x.dtype) - sigma) * (x - denoised) / sigma
    return x


def tiny_unet(seed: int = 0) -> torch.nn.Module:
    """A tiny ``UNet2DModel`` (3 channels, 8×8) for the EDM checks."""
    from diffusers import UNet2DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DModel(sample_size=8, in_channels=3, out_channels=3,
                           block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                           down_block_types=("DownBlock2D", "DownBlock2D"),
                           up_block_types=("UpBlock2D", "UpBlock2D")).eval()


PIPELINES = {"sd3": sd3_pipeline, "flux": flux_pipeline}
