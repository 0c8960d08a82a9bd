r"""A real diffusers model in the algebra: attribute composition on procedural scenes.

Composable Diffusion's prompt algebra ("A AND B", "A NOT B") on a text-conditioned
``UNet2DConditionModel`` trained here, saved with ``save_pretrained`` and loaded back through
``rc.from_pretrained`` like any pipeline folder.

**Data.** 16×16 scenes (:mod:`recompose.data.clevr`'s renderer) with 1–3 objects, each a sphere
or a cube in one of four colours. Each training image is captioned by *one* of its objects,
uniformly chosen: its colour and shape ("red cube", half the time), its colour only ("red") or
its shape only ("cube"); with probability ``drop`` the caption is empty (the null condition).
So ``p(x | "red cube")`` is the distribution of scenes that contain a red cube.

**Text encoder.** A tiny CLIP text model (2 layers, width 32) with random, frozen weights
(seeded) and a word-level BPE tokenizer over the caption vocabulary: the prompts' embeddings
differ, and the UNet learns to read them through cross-attention.

**Compositions** (``U`` the null view, the prompts' views ``P``):

* ``AND``: ``P("red cube") · P("blue sphere") / U`` (Composable Diffusion's conjunction,
  ``ε̂ = ε̂(∅) + Σ_k (ε̂(c_k) − ε̂(∅))``: the base density counted once);
* ``NOT``: ``U · P("cube") / P("red")`` (Composable Diffusion's negation at weight 1:
  ``ε̂ = ε̂(∅) + (ε̂(cube) − ε̂(∅)) − (ε̂(red) − ε̂(∅))``).

**Checker** (:class:`AttributeChecker`): a small CNN trained on ground-truth scenes to predict,
for each of the 8 (colour, shape) pairs, whether the scene contains such an object. A single
prompt is correct when it finds a red cube, AND when it finds a red cube and a blue sphere, NOT
when it finds a cube and no red object.

Commands (``python -m experiments.attributes train|checker|table``): ``train`` (resumable,
writes the pipeline folder ``experiments/weights/attributes``), ``checker`` (writes
``experiments/weights/attribute-checker.safetensors``), ``table`` (config
``configs/attributes.json``).
"""

# ruff: noqa: E402 (the first line comes before the slow imports)
from __future__ import annotations

from .common import announce

announce(__name__, "attributes: attribute composition on a diffusers model (train ≈ 40 min, "
         "checker ≈ 3 min, table ≈ 15 min on 2 cores); loading torch and diffusers")

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recompose.data.clevr import COLOURS, SceneSpec, object_positions, render
from recompose.integrations.diffusers import from_pretrained
from recompose.models.base import DiffusionModel

from .common import (
    echo,
    markdown_table,
    parse_config,
    sampler_args,
    script,
    signals_as_usual,
    write_results,
)

__all__ = ["COLOUR_NAMES", "SHAPE_NAMES", "SPEC", "word_tokenizer", "text_encoder",
           "attribute_scenes", "captions", "build_unet", "AttributeChecker"]

WEIGHTS = Path(__file__).resolve().parent / "weights"
PIPELINE = WEIGHTS / "attributes"
CHECKER = WEIGHTS / "attribute-checker.safetensors"
#: the second checker (another architecture and seed): grades what the first one steered
EVAL_CHECKER = WEIGHTS / "attribute-checker-eval.safetensors"
COLOUR_NAMES = ("red", "green", "blue", "yellow")  # rows 0–3 of clevr.COLOURS
SHAPE_NAMES = ("sphere", "cube")  # clevr's shape codes 0, 1
SPEC = SceneSpec(size=16, radius=2.5, min_objects=1, max_objects=3, margin=3 / 16,
                 min_dist=6 / 16)
MAX_TOKENS = 6  # <start> colour shape <end> + padding


# ----------------------------------------------------------------- text side
def word_tokenizer(words: tuple[str, ...] = COLOUR_NAMES + SHAPE_NAMES + ("a", "and"),
                   max_length: int = MAX_TOKENS) -> object:
    """A CLIP tokenizer whose BPE merges spell exactly ``words`` (lower-case letters)."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    merges: list[tuple[str, str]] = []
    for word in words:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:  # merge left to right: r e d</w> → re d</w> → red</w>
            pair = (parts[0], parts[1])
            if pair not in merges:
                merges.append(pair)
            vocab.setdefault(pair[0] + pair[1], len(vocab))
            parts = [pair[0] + pair[1]] + parts[2:]
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def text_encoder(vocab_size: int, seed: int = 0, width: int = 32) -> nn.Module:
    """A tiny CLIP text model with seeded random weights (frozen: never trained)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(vocab_size=vocab_size, hidden_size=width, intermediate_size=2 * width,
                            num_hidden_layers=2, num_attention_heads=4,
                            max_position_embeddings=MAX_TOKENS, bos_token_id=0, eos_token_id=1,
                            pad_token_id=1)
    torch.manual_seed(seed)
    return CLIPTextModel(config).eval().requires_grad_(False)


# ----------------------------------------------------------------- scenes
def attribute_scenes(n: int, gen: torch.Generator, spec: SceneSpec = SPEC) -> dict[str, Tensor]:
    """``{"x": (n, 3, 16, 16), "colour": (n, m), "shape": (n, m)}`` with ``-1`` for absent
    objects, and ``"present": (n, 4, 2)`` (a scene holds an object of colour i and shape j)."""
    m = spec.max_objects
    k = torch.randint(spec.min_objects, m + 1, (n,), generator=gen)
    pos = object_positions(n, k, spec, gen)
    shape = torch.randint(0, 2, (n, m), generator=gen)
    colour = torch.randint(0, len(COLOUR_NAMES), (n, m), generator=gen)
    rgb = COLOURS[colour] * (0.85 + 0.3 * torch.rand(n, m, 1, generator=gen))
    x = render(pos, shape, rgb, spec)
    used = torch.arange(m)[None] < k[:, None]
    colour, shape = colour.masked_fill(~used, -1), shape.masked_fill(~used, -1)
    present = torch.zeros(n, len(COLOUR_NAMES), 2)
    for j in range(m):
        rows = used[:, j].nonzero().flatten()
        present[rows, colour[rows, j], shape[rows, j]] = 1.0
    return {"x": x, "colour": colour, "shape": shape, "present": present}


def captions(colour: Tensor, shape: Tensor, gen: torch.Generator, drop: float = 0.1
             ) -> list[str]:
    """One caption per scene: one of its objects (uniformly), described fully (½), by colour
    (¼) or by shape (¼); the empty caption with probability ``drop``."""
    n = colour.shape[0]
    count = (colour >= 0).sum(1)
    which = (torch.rand(n, generator=gen) * count).long()
    kind = torch.rand(n, generator=gen)
    dropped = torch.rand(n, generator=gen) < drop
    out = []
    for i in range(n):
        c, s = COLOUR_NAMES[colour[i, which[i]]], SHAPE_NAMES[shape[i, which[i]]]
        text = f"{c} {s}" if kind[i] < 0.5 else c if kind[i] < 0.75 else s
        out.append("" if dropped[i] else text)
    return out


# ----------------------------------------------------------------- the diffusion model
def build_unet() -> nn.Module:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=16, in_channels=3, out_channels=3, block_out_channels=(32, 64),
        layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
        attention_head_dim=8, norm_num_groups=8)


def build_scheduler(objective: str = "ddpm") -> object:
    """The training path: DDPM's cosine table (ε-prediction), or flow matching
    (``x_t = (1 − σ) x₀ + σ ε``, the network predicts ``ε − x₀``; SD3 / FLUX conventions)."""
    from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler

    if objective == "flow":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                         prediction_type="epsilon", clip_sample=True)


def save_pipeline(folder: Path, unet: nn.Module, scheduler: object, encoder: nn.Module,
                  tokenizer: object) -> None:
    """A pipeline folder as ``save_pretrained`` writes it (``model_index.json`` + parts)."""
    import diffusers

    folder.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(folder / "unet")
    scheduler.save_pretrained(folder / "scheduler")
    encoder.save_pretrained(folder / "text_encoder")
    tokenizer.save_pretrained(folder / "tokenizer")
    index = {"_class_name": "RecomposeTextToImage", "_diffusers_version": diffusers.__version__,
             "unet": ["diffusers", type(unet).__name__],
             "scheduler": ["diffusers", type(scheduler).__name__],
             "text_encoder": ["transformers", type(encoder).__name__],
             "tokenizer": ["transformers", type(tokenizer).__name__]}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))


def noisy_batch(x0: Tensor, scheduler: object, objective: str, gen: torch.Generator
                ) -> tuple[Tensor, Tensor, Tensor]:
    """``(x_t, timestep, target)`` for one training batch.

    DDPM: a uniform timestep ``k``, ``x_t = √ᾱ_k x₀ + √(1 − ᾱ_k) ε``, target ``ε``. Flow matching
    (diffusers' SD3 / FLUX training scripts): logit-normal ``u = sigmoid(N(0, 1))`` picks one of
    the scheduler's training sigmas (``σ = (N − ⌊u N⌋)/N``), ``x_t = (1 − σ) x₀ + σ ε``, the
    network sees the timestep ``σ N`` and regresses the velocity ``ε − x₀``."""
    b = x0.shape[0]
    if objective == "flow":
        n = scheduler.config.num_train_timesteps
        u = torch.sigmoid(torch.randn(b, generator=gen))
        noise = torch.randn(x0.shape, generator=gen)
        sigma = scheduler.sigmas[(u * n).long().clamp(max=n - 1)].view(-1, 1, 1, 1)
        return (1 - sigma) * x0 + sigma * noise, sigma.flatten() * n, noise - x0
    a_bar = scheduler.alphas_cumprod
    k = torch.randint(0, len(a_bar), (b,), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    ab = a_bar[k].view(-1, 1, 1, 1)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise, k, noise


def train(out: Path, steps: int, batch: int = 64, lr: float = 1e-3, seed: int = 0,
          pool: int = 40000, ema: float = 0.999, save_every: int = 500,
          objective: str = "ddpm") -> None:
    """Train the UNet with the ε-MSE (DDPM) loss or the flow-matching loss (``objective``);
    resumable from ``out/checkpoint.pt``; the EMA weights are written as a pipeline folder
    ``out/pipeline`` at every checkpoint."""
    import copy

    from tqdm.auto import tqdm

    out.mkdir(parents=True, exist_ok=True)
    tokenizer = word_tokenizer()
    encoder = text_encoder(len(tokenizer.get_vocab()))
    scheduler = build_scheduler(objective)
    data = attribute_scenes(pool, torch.Generator().manual_seed(seed))
    unet = build_unet()
    avg = copy.deepcopy(unet).requires_grad_(False)
    opt = torch.optim.Adam(unet.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed + 1)
    start = 0
    ckpt = out / "checkpoint.pt"
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        unet.load_state_dict(state["unet"])
        avg.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        start = int(state["step"])
    vocab_cache: dict[str, Tensor] = {}

    def embed(texts: list[str]) -> Tensor:
        missing = sorted(set(texts) - set(vocab_cache))
        if missing:
            ids = tokenizer(missing, padding="max_length", max_length=MAX_TOKENS,
                            truncation=True, return_tensors="pt").input_ids
            with torch.no_grad():
                for text, e in zip(missing, encoder(ids, return_dict=False)[0]):
                    vocab_cache[text] = e
        return torch.stack([vocab_cache[t] for t in texts])

    bar = tqdm(range(start, steps), initial=start, total=steps, desc="train attributes")
    t0, losses = time.time(), []
    for step in bar:
        idx = torch.randint(pool, (batch,), generator=gen)
        x0 = data["x"][idx]
        cond = embed(captions(data["colour"][idx], data["shape"][idx], gen))
        xt, k, target = noisy_batch(x0, scheduler, objective, gen)
        for g in opt.param_groups:  # cosine decay to 10 %
            g["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        loss = F.mse_loss(unet(xt, k, encoder_hidden_states=cond, return_dict=False)[0], target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for pa, p in zip(avg.parameters(), unet.parameters()):
                pa.lerp_(p, 1 - ema)
        losses.append(loss.item())
        if (step + 1) % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / 50:.4f}")
        if (step + 1) % save_every == 0 or step + 1 == steps:
            tmp = out / "checkpoint.tmp"
            torch.save({"unet": unet.state_dict(), "ema": avg.state_dict(),
                        "opt": opt.state_dict(), "gen": gen.get_state(), "step": step + 1}, tmp)
            tmp.replace(ckpt)
            save_pipeline(out / "pipeline", avg, scheduler, encoder, tokenizer)
            with (out / "log.jsonl").open("a") as f:
                f.write(json.dumps({"step": step + 1, "loss": sum(losses) / len(losses),
                                    "seconds": time.time() - t0}) + "\n")
            losses = []


# ----------------------------------------------------------------- the checker
class AttributeChecker(nn.Module):
    """``x (B, 3, 16, 16) -> logits (B, 4, 2)``: the scene holds an object of colour i, shape j."""

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        c = channels
        self.body = nn.Sequential(
            nn.Conv2d(3, c, 3, padding=1), nn.SiLU(), nn.Conv2d(c, c, 3, padding=1), nn.SiLU(),
            nn.MaxPool2d(2), nn.Conv2d(c, 2 * c, 3, padding=1), nn.SiLU(),
            nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.SiLU(), nn.AdaptiveMaxPool2d(1),
            nn.Flatten(), nn.Linear(2 * c, 2 * c), nn.SiLU(),
            nn.Linear(2 * c, len(COLOUR_NAMES) * 2))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x).view(-1, len(COLOUR_NAMES), 2)

    @torch.no_grad()
    def present(self, x: Tensor) -> Tensor:
        """``(B, 4, 2)`` booleans."""
        return self(x.clamp(-1, 1)) > 0


class EvalChecker(nn.Module):
    """The second checker, built unlike :class:`AttributeChecker` so that it does not share its
    blind spots: strided convolutions with group norm, average pooling over a spatial map and a
    per-pair head. Same output, ``(B, 4, 2)`` logits."""

    def __init__(self, channels: int = 48) -> None:
        super().__init__()
        c = channels
        self.body = nn.Sequential(
            nn.Conv2d(3, c, 5, padding=2), nn.GroupNorm(8, c), nn.GELU(),
            nn.Conv2d(c, c, 3, stride=2, padding=1), nn.GroupNorm(8, c), nn.GELU(),
            nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(8, c), nn.GELU())
        self.head = nn.Conv2d(c, len(COLOUR_NAMES) * 2, 1)  # a presence map per pair

    def forward(self, x: Tensor) -> Tensor:
        logits = self.head(self.body(x))  # (B, 8, 8, 8)
        # a smooth maximum over positions: "some place holds such an object"
        return torch.logsumexp(4 * logits.flatten(2), -1).div(4).view(-1, len(COLOUR_NAMES), 2)

    @torch.no_grad()
    def present(self, x: Tensor) -> Tensor:
        """``(B, 4, 2)`` booleans."""
        return self(x.clamp(-1, 1)) > 0


CHECKERS = {"reward": (AttributeChecker, CHECKER, 7), "eval": (EvalChecker, EVAL_CHECKER, 23)}


def train_checker(steps: int = 3000, batch: int = 256, which: str = "reward") -> dict:
    """Train a checker on ground-truth scenes only and report its held-out scene accuracy."""
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    cls, path, seed = CHECKERS[which]
    torch.manual_seed(seed)
    net = cls()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    for step in tqdm(range(steps), desc=f"train {which} checker"):
        d = attribute_scenes(batch, gen)
        x = d["x"] + 0.03 * torch.randn(d["x"].shape, generator=gen)  # sampler-like residue
        loss = F.binary_cross_entropy_with_logits(net(x), d["present"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        for g in opt.param_groups:
            g["lr"] = 2e-3 * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / steps)))
    test = attribute_scenes(4000, torch.Generator().manual_seed(seed + 1000))
    net.eval()
    exact = (net.present(test["x"]) == test["present"].bool()).flatten(1).all(1)
    metrics = {"scene_accuracy": float(exact.float().mean()), "test_scenes": 4000,
               "seed": seed, "architecture": cls.__name__}
    WEIGHTS.mkdir(exist_ok=True)
    save_file(net.state_dict(), str(path), metadata={"metrics": json.dumps(metrics)})
    return metrics


def load_checker(which: str = "reward") -> AttributeChecker | EvalChecker:
    """The reward checker (``"reward"``, the one the §9 table used) or the evaluation checker
    (``"eval"``)."""
    from safetensors.torch import load_file

    cls, path, _ = CHECKERS[which]
    net = cls()
    net.load_state_dict(load_file(str(path)))
    return net.eval()


# ----------------------------------------------------------------- the table
RED, BLUE, SPHERE, CUBE = 0, 2, 0, 1
PARTICLES = 4  # particles per population for the weighted samplers


def composition(model: DiffusionModel, name: str) -> DiffusionModel:
    """The table's compositions of the pipeline model (its null view is ``model``)."""
    if name == "single":
        return model.prompt("red cube")
    if name == "and":
        return model.prompt("red cube") * model.prompt("blue sphere") / model
    if name == "not":
        return model * model.prompt("cube") / model.prompt("red")
    raise ValueError(f"unknown composition {name!r}; choose single, and, not")


def correct(present: Tensor, name: str) -> Tensor:
    """``(B,)`` booleans from the checker's ``(B, 4, 2)`` presence grid."""
    if name == "single":
        return present[:, RED, CUBE]
    if name == "and":
        return present[:, RED, CUBE] & present[:, BLUE, SPHERE]
    return present[:, :, CUBE].any(1) & ~present[:, RED, :].any(1)


def _cell(model: DiffusionModel, checker: AttributeChecker, comp: str, sampler: str, n: int,
          seed: int, levels: int, steps: int, leapfrog: int) -> dict:
    import recompose as rc

    name, options = sampler_args(sampler)
    mcmc = {} if name in ("reverse", "fkc", "ode") else {"num_steps": steps}
    if name in ("uhmc", "hmc"):
        mcmc["num_leapfrog_steps"] = leapfrog
    groups = None
    if name in ("smc", "fkc"):  # independent populations of 4, so that the error bar is honest
        groups = torch.arange(n) // PARTICLES
        options = {**options, "groups": groups}
    r = rc.sample(composition(model, comp), n, name, num_levels=levels, seed=seed,
                  clip=(-1.0, 1.0), **mcmc, **options)
    x = r.x.clamp(-1, 1)
    ok = correct(checker.present(x), comp).double()
    p = float(ok.mean())
    if groups is None:
        se = (p * (1 - p) / n) ** 0.5
    else:  # a population's images share ancestors: the spread of the populations' means
        means = torch.stack([ok[groups == g].mean() for g in groups.unique()])
        se = float(means.std() / len(means) ** 0.5)
    return {"composition": comp, "sampler": sampler, "accuracy": p,
            "se": se, "network_evals": r.info.network_score_evals,
            "acceptance": r.info.mean_acceptance, "wall_time": r.info.wall_time, "x": x}


def table(argv: list[str] | None = None) -> None:
    from tqdm.auto import tqdm

    from recompose.viz.plots import image_panels

    config = parse_config("attributes", "attribute composition on a diffusers model", argv)
    torch.set_num_threads(config["threads"])
    model = from_pretrained(config["pipeline"])
    checker = load_checker()
    cells, images = [], {}
    bar = tqdm(total=len(config["compositions"]) * len(config["samplers"]), desc="cells")
    for comp in config["compositions"]:
        for sampler in config["samplers"]:
            bar.set_postfix_str(f"{comp} {sampler}")
            cell = _cell(model, checker, comp, sampler, config["n"], config["seed"],
                         config["levels"], config["mcmc_steps"], config["leapfrog"])
            images[(comp, sampler)] = cell.pop("x")
            cells.append(cell)
            echo(f"{comp:6s} {sampler:9s} {cell['accuracy']:.2f} ± {cell['se']:.2f} "
                 f"({cell['network_evals']} evals, {cell['wall_time']:.0f} s)")
            bar.update()
    bar.close()
    header = ["composition"] + list(config["samplers"])
    rows = []
    for comp in config["compositions"]:
        row = [comp]
        for sampler in config["samplers"]:
            c = next(c for c in cells if c["composition"] == comp and c["sampler"] == sampler)
            row.append(f"{c['accuracy']:.2f} ± {c['se']:.2f} ({c['network_evals']})")
        rows.append(row)
    text = markdown_table(header, rows)
    print(text)
    write_results(config, {"cells": cells}, text)
    figures = Path(config["out"]) / "figures"
    figures.mkdir(exist_ok=True)
    for comp in config["compositions"]:
        panels = {s: images[(comp, s)][:40] for s in config["samplers"]}
        image_panels(panels, nrow=8, panel_width=2.4).savefig(figures / f"{comp}.png", dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train (or resume) the text-conditioned UNet")
    p.add_argument("--out", type=Path, default=Path("runs/attributes_train"))
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--objective", choices=("ddpm", "flow"), default="ddpm",
                   help="ddpm: ε-prediction on the cosine table (experiments/weights/"
                   "attributes); flow: flow matching, velocity ε − x₀ (attributes-flow)")
    c = sub.add_parser("checker", help="train an attribute checker")
    c.add_argument("--steps", type=int, default=3000)
    c.add_argument("--which", choices=tuple(CHECKERS), default="reward",
                   help="reward: the §9 checker (also the reward of §16); eval: the second "
                   "checker, another architecture and seed, that grades §16")
    sub.add_parser("table", help="the composition table (configs/attributes.json; any entry "
                   "can be overridden, e.g. table --n 20)", add_help=False)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["table"]:
        return script(table)(argv[1:])
    signals_as_usual()  # training: Ctrl-C as usual (checkpoints are kept)
    args = parser.parse_args(argv)
    if args.command == "train":
        torch.set_num_threads(args.threads)
        train(args.out, args.steps, objective=args.objective)
    elif args.command == "checker":
        print(json.dumps(train_checker(args.steps, which=args.which)))


if __name__ == "__main__":
    main()
