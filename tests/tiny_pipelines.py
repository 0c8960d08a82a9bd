"""Tiny random-initialised diffusers pipelines for tests, built here from configs, offline and
seeded (the same ``seed`` gives the same weights; the global torch RNG is left as it was).

* :func:`sd3_pipeline`: a ``StableDiffusion3Pipeline`` (two CLIP text encoders with projection,
  a T5 encoder, an ``SD3Transformer2DModel``, an SD3-style VAE, flow-matching Euler);
* :func:`flux_pipeline`: a ``FluxPipeline`` (CLIP pooled output, T5, a
  ``FluxTransformer2DModel`` with or without guidance embedding, dynamic shifting);
* :func:`word_tokenizer` / :func:`t5_tokenizer`: CLIP (BPE) and T5 (Unigram) tokenizers with one
  token per word of :data:`WORDS` (no sentencepiece file); :func:`save` writes a pipeline folder.

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
