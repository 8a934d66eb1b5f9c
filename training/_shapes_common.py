"""Shared pieces of the shapes-clip and shapes-coca recipes: vocabulary, configs, batches,
losses, saving and the held-out zero-shot evaluation."""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from groundroll.data import shapes

IMAGE_SIZE = 96
PATCH_SIZE = 8  # 12 x 12 patch grid
CONTEXT_LENGTH = 24
MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip's OPENAI_DATASET_MEAN / STD
STD = (0.26862954, 0.26130258, 0.27577711)
# Runtime preprocessing: keep the whole (non-square) scene, pad the short side (black).
PREPROCESS_CFG = {"size": IMAGE_SIZE, "mode": "RGB", "mean": list(MEAN), "std": list(STD),
                  "interpolation": "bicubic", "resize_mode": "longest", "fill_color": 0}

TEMPLATES = ("a photo of {}.", "{}", "a picture of {}.", "an image of {}.",
             "a photo of {} on a background.", "there is {}.")
EVAL_TEMPLATE = "a photo of a {}."

EXTRA_WORDS = (
    "a an the of and with on in is are there this that photo picture image drawing "
    "painting render scene shape shapes object objects thing background colored coloured "
    "one two three four some small big large little left right top bottom middle center "
    "next to near above below it its my".split()
)
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles",
           "star": "stars", "ellipse": "ellipses"}


def vocabulary() -> list[str]:
    """Ordered vocabulary: [PAD]=0, [SOT], [UNK], words..., [EOT] last."""
    words = list(shapes.COLORS) + list(shapes.SHAPES) + list(PLURALS.values())
    words += [w for w in EXTRA_WORDS if w not in words]
    words += [".", ","]
    seen, ordered = set(), []
    for w in words:
        if w not in seen:
            seen.add(w)
            ordered.append(w)
    return ["[PAD]", "[SOT]", "[UNK]", *ordered, "[EOT]"]


def build_tokenizer():
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel

    vocab = {w: i for i, w in enumerate(vocabulary())}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase(),
                                           normalizers.StripAccents()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["[PAD]", "[SOT]", "[UNK]", "[EOT]"])
    return tok


def clip_config(vocab_size: int, pos_embed: str = "sin_cos_2d") -> dict:
    return {
        "embed_dim": 128,
        "vision_cfg": {"image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE, "layers": 4,
                       "width": 128, "head_width": 32, "pos_embed_type": pos_embed},
        "text_cfg": {"context_length": CONTEXT_LENGTH, "vocab_size": vocab_size,
                     "width": 128, "heads": 4, "layers": 3},
    }


def coca_config(vocab_size: int, pos_embed: str = "sin_cos_2d") -> dict:
    return {
        "embed_dim": 128,
        "vision_cfg": {"image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE, "layers": 4,
                       "width": 128, "head_width": 32, "pos_embed_type": pos_embed,
                       "attentional_pool": True,
                       "attn_pooler_queries": 16, "attn_pooler_heads": 4,
                       "output_tokens": True},
        "text_cfg": {"context_length": CONTEXT_LENGTH, "vocab_size": vocab_size,
                     "width": 128, "heads": 4, "layers": 3, "embed_cls": True,
                     "output_tokens": True},
        "multimodal_cfg": {"context_length": CONTEXT_LENGTH, "vocab_size": vocab_size,
                           "width": 128, "heads": 4, "layers": 2, "dim_head": 32,
                           "attn_pooler_heads": 4},
        "custom_text": True,
    }


def seed_everything(seed: int) -> np.random.Generator:
    random.seed(seed)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def _letterbox(image: np.ndarray) -> np.ndarray:
    """Centre-pad to ``IMAGE_SIZE`` square with zeros (the ``resize_mode='longest'`` layout)."""
    h, w = image.shape[:2]
    out = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    top, left = (IMAGE_SIZE - h) // 2, (IMAGE_SIZE - w) // 2
    out[top:top + h, left:left + w] = image
    return out


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def train_scene(rng: np.random.Generator, labels: list[str] | None = None) -> shapes.Scene:
    """A training scene already in model layout: square, or non-square and letterboxed.

    Few objects dominate (many single-object scenes keep patch tokens local); the object
    scale varies through the radius range."""
    k = int(rng.choice([1, 2, 3, 4], p=[0.35, 0.3, 0.2, 0.15]))
    if rng.random() < 0.6:
        size = (IMAGE_SIZE, IMAGE_SIZE)
    else:
        short = int(rng.integers(64, IMAGE_SIZE))
        size = (short, IMAGE_SIZE) if rng.random() < 0.7 else (IMAGE_SIZE, short)
    s = shapes.scene(rng, size=size, n_objects=k, labels=labels, radius=(0.1, 0.3))
    if size != (IMAGE_SIZE, IMAGE_SIZE):
        s.image = _letterbox(s.image)
    return s


def _shape_twin(labels: list[str], rng: np.random.Generator) -> list[str]:
    """The same colours with every shape replaced by a different one (labels stay unique)."""
    out: list[str] = []
    for lab in labels:
        colour, shape = lab.split()
        choices = [s for s in shapes.SHAPES if s != shape and f"{colour} {s}" not in out
                   and f"{colour} {s}" not in labels]
        if not choices:
            choices = [s for s in shapes.SHAPES if s != shape and f"{colour} {s}" not in out]
        out.append(f"{colour} {choices[int(rng.integers(len(choices)))]}")
    return out


def _phrase(labels: list[str]) -> str:
    return shapes.caption_for(labels)


def _hard_negative(labels: list[str], rng: np.random.Generator) -> list[str]:
    """Same objects with one attribute changed or two colours swapped: at least one label
    of the result is absent from the scene."""
    labels = list(labels)
    present = set(labels)
    for _ in range(20):
        out = list(labels)
        if len(out) >= 2 and rng.random() < 0.4:
            i, j = rng.choice(len(out), 2, replace=False)
            (ci, si), (cj, sj) = out[i].split(), out[j].split()
            out[i], out[j] = f"{cj} {si}", f"{ci} {sj}"
        else:
            i = int(rng.integers(len(out)))
            c, s = out[i].split()
            if rng.random() < 0.3:
                c = list(shapes.COLORS)[int(rng.integers(len(shapes.COLORS)))]
            else:
                s = shapes.SHAPES[int(rng.integers(len(shapes.SHAPES)))]
            out[i] = f"{c} {s}"
        if any(lab not in present for lab in out):
            rng.shuffle(out)
            return out
    return [lab for lab in shapes.LABELS if lab not in present][:1]


def make_batch(rng: np.random.Generator, batch_size: int, *, subset_prob: float = 0.5,
               twins: bool = True, normalise: bool = True):
    """Images, positive texts (full caption in random order, or a random subset of the
    objects), hard negative texts, and label sets for false-negative masking.

    With ``twins`` every second scene is a shape twin of the one before: same colours,
    every shape changed, so colour alone cannot tell the two apart within the batch. With
    ``normalise=False`` the images come as uint8 [B, 3, H, W] (see ``normalise_images``)."""
    images, pos, neg, img_sets, pos_sets, neg_sets, full = [], [], [], [], [], [], []
    previous: list[str] | None = None
    for i in range(batch_size):
        if twins and i % 2 == 1 and previous is not None:
            s = train_scene(rng, labels=_shape_twin(previous, rng))
        else:
            s = train_scene(rng)
        previous = list(s.labels)
        labels = list(s.labels)
        order = list(rng.permutation(len(labels)))
        shuffled = [labels[i] for i in order]
        if len(labels) > 1 and rng.random() < subset_prob:
            m = int(rng.integers(1, len(labels)))
            chosen = shuffled[:m]
        else:
            chosen = shuffled
        template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
        negative = _hard_negative(labels, rng)
        images.append(s.image)
        pos.append(template.format(_phrase(chosen)))
        neg.append(template.format(_phrase(negative)))
        full.append(_phrase(shuffled))
        img_sets.append(set(labels))
        pos_sets.append(set(chosen))
        neg_sets.append(set(negative))
    if normalise:
        batch = to_tensor(images)
    else:
        batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return batch, pos, neg, full, img_sets, pos_sets + neg_sets


def normalise_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> the model's normalised float input, on the images' device."""
    mean = torch.tensor(MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


class BatchStream(torch.utils.data.IterableDataset):
    """Endless training batches for a ``DataLoader(batch_size=None)``: uint8 images, token ids
    of [positives | hard negatives] and the false-negative mask.

    Worker ``k`` draws from ``numpy.random.default_rng([seed, k])`` and the loader takes the
    workers in turn, so a run is reproducible for a given seed and worker count.
    """

    def __init__(self, seed: int, batch_size: int, tokenizer, *, subset_prob: float = 0.5):
        self.seed, self.batch_size, self.tokenizer = seed, batch_size, tokenizer
        self.subset_prob = subset_prob

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        if info is not None:
            torch.set_num_threads(1)  # one core per loader process
        rng = np.random.default_rng([self.seed, 0 if info is None else info.id])
        while True:
            yield tensor_batch(rng, self.batch_size, self.tokenizer,
                               subset_prob=self.subset_prob)


def tensor_batch(rng: np.random.Generator, batch_size: int, tokenizer, *,
                 subset_prob: float = 0.5):
    """``make_batch`` as tensors: uint8 images, token ids of [positives | hard negatives]
    and the false-negative mask."""
    images, pos, neg, _, img_sets, text_sets = make_batch(rng, batch_size, normalise=False,
                                                          subset_prob=subset_prob)
    return images, tokenizer(pos + neg), false_negatives(img_sets, text_sets)


def recipe_parser(description: str, *, steps: int, batch_size: int) -> argparse.ArgumentParser:
    """The options every shapes recipe takes: output directory, steps, seed, batch size,
    learning rate, vision position embedding, the run options (:func:`add_run_options`)
    and the held-out evaluation. Read them with :func:`parse_recipe_args`."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--pos-embed", choices=["sin_cos_2d", "learnable"], default="sin_cos_2d",
                   help="vision position embedding (fixed 2-D sin-cos gives spatial layout "
                        "from the first step)")
    add_run_options(p)
    p.add_argument("--eval-n", type=int, default=500, help="held-out scenes; 0 skips")
    return p


def parse_recipe_args(p: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """``p.parse_args(argv)``, with the run options checked together."""
    args = p.parse_args(argv)
    check_run_options(p, args)
    return args


def add_run_options(p) -> None:
    """Command-line options shared by the shapes recipes: threads, device, loader
    processes, warm-up, schedule, time budget and periodic saves."""
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--workers", type=int, default=0,
                   help="DataLoader processes drawing scenes (0: draw in this process)")
    p.add_argument("--warmup", type=int, default=None,
                   help="linear warm-up steps (default: a tenth of --steps, at most 100)")
    p.add_argument("--schedule", choices=["steps", "time"], default="steps",
                   help="cosine decay over --steps, or over --max-minutes of wall time "
                        "(for hardware whose speed is not known in advance)")
    p.add_argument("--max-minutes", type=float, default=None, metavar="MINUTES",
                   help="stop early and save when training takes longer (steps done are "
                        "recorded in meta.json)")
    p.add_argument("--save-every-minutes", type=float, default=None, metavar="MINUTES",
                   help="also save the weights at this interval while training")


def check_run_options(p, args) -> None:
    if args.schedule == "time" and args.max_minutes is None:
        p.error("--schedule time needs --max-minutes")
    if args.workers < 0:
        p.error(f"--workers must be >= 0, got {args.workers}")


def setup_device(args) -> torch.device:
    """Torch threads of this process and the training device (TF32 matrix products on
    CUDA)."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def batch_source(args, tokenizer, rng: np.random.Generator, *, subset_prob: float = 0.5):
    """Iterator of ``tensor_batch`` results: drawn in this process from ``rng``
    (``--workers 0``) or by ``--workers`` loader processes (``BatchStream``), which start
    here, so call it before the model goes to a GPU."""
    if args.workers:
        return iter(torch.utils.data.DataLoader(
            BatchStream(args.seed, args.batch_size, tokenizer, subset_prob=subset_prob),
            batch_size=None, num_workers=args.workers,
            pin_memory=torch.device(args.device).type == "cuda", prefetch_factor=4,
            persistent_workers=True))

    def draw():
        while True:
            yield tensor_batch(rng, args.batch_size, tokenizer, subset_prob=subset_prob)
    return draw()


@dataclass
class Run:
    """What a recipe run sets up before building its model (:func:`start`).

    Attributes
    ----------
    args : argparse.Namespace
    device : torch.device
    hf_tokenizer : tokenizers.Tokenizer
        The word-level vocabulary, saved with the model.
    tokenizer : groundroll.zoo.openclip.WordTokenizer
        ``hf_tokenizer`` padded to :data:`CONTEXT_LENGTH`.
    warmup : int
        Linear warm-up steps.
    stream : iterator or None
        ``tensor_batch`` results (:func:`batch_source`); :func:`train` drops it at the
        end, which stops the loader processes.
    """

    args: argparse.Namespace
    device: torch.device
    hf_tokenizer: Any
    tokenizer: Any
    warmup: int
    stream: Iterator | None


def start(args, *, subset_prob: float = 0.5) -> Run:
    """Set up the device, seed, tokenizers and batch stream of a run. The loader processes
    start here, so call it before the model goes to a GPU."""
    from groundroll.zoo.openclip import WordTokenizer

    device = setup_device(args)
    rng = seed_everything(args.seed)
    hf_tok = build_tokenizer()
    tokenizer = WordTokenizer(hf_tok, CONTEXT_LENGTH)
    stream = batch_source(args, tokenizer, rng, subset_prob=subset_prob)
    return Run(args, device, hf_tok, tokenizer, warmup_steps(args), stream)


def warmup_steps(args) -> int:
    return args.warmup if args.warmup is not None else max(1, min(100, args.steps // 10))


def learning_rate(args, step: int, elapsed: float, warmup: int) -> float:
    """``cosine_lr`` by steps, or by the fraction of ``--max-minutes`` spent."""
    progress = elapsed / (60 * args.max_minutes) if args.schedule == "time" else None
    return cosine_lr(step, args.steps, args.lr, warmup, progress=progress)


def run_meta(run: Run, meta: dict) -> dict:
    """Add the device, loader and schedule facts to ``base_meta``'s training record."""
    args, device = run.args, run.device
    cuda = device.type == "cuda"
    meta["training"].update({"device": torch.cuda.get_device_name(device) if cuda else "cpu",
                             "workers": args.workers, "warmup": run.warmup,
                             "schedule": args.schedule,
                             "scenes_seen": meta["training"]["steps"] * args.batch_size})
    if args.workers:
        meta["training"]["train_seeds"] = (
            "numpy Generator([seed, worker]) streams, scenes drawn on the fly")
    return meta


def make_optimizer(model, lr: float) -> torch.optim.AdamW:
    """AdamW (betas 0.9 / 0.98), weight decay 0.05 on weight matrices only."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    other = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                              {"params": other, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98))


def train(run: Run, model, opt, losses, save, *, desc: str) -> tuple[dict, float]:
    """The recipes' training loop; returns the final ``save(steps_done, seconds)`` and the
    seconds spent.

    Each step: stop at ``--max-minutes``, save every ``--save-every-minutes``, set the
    learning rate, take a batch from ``run.stream`` to ``run.device``,
    ``losses(images, text, drop)`` under bfloat16 autocast on CUDA (a dict whose ``"loss"``
    is minimised; every entry is logged), clip gradients at 1, step, clamp the logit scale
    at 100. The model ends in eval mode on the CPU, and the stream is dropped (its loader
    processes stop) before the final save.
    """
    from tqdm import tqdm

    args, device, warmup, stream = run.args, run.device, run.warmup, run.stream
    cuda = device.type == "cuda"
    timer = Timer()
    model.train()
    bar = tqdm(range(args.steps), desc=desc, mininterval=10)
    steps_done, waited, last_save = 0, 0.0, 0.0
    for step in bar:
        elapsed = timer()
        if args.max_minutes is not None and elapsed > 60 * args.max_minutes:
            print(f"time limit reached after {step} steps", flush=True)
            break
        if args.save_every_minutes and elapsed - last_save > 60 * args.save_every_minutes:
            save(steps_done, elapsed)
            last_save = elapsed
        lr = learning_rate(args, step, elapsed, warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        t0 = timer()
        images, text, drop = next(stream)
        waited += timer() - t0
        images = normalise_images(images.to(device, non_blocking=True))
        text, drop = text.to(device, non_blocking=True), drop.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            terms = losses(images, text, drop)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)
        steps_done = step + 1
        if step % 50 == 0:
            values = {k: v.item() for k, v in terms.items()}
            bar.set_postfix({k: f"{v:.3f}" for k, v in values.items()}, refresh=False)
            print(f"step {step} " + " ".join(f"{k} {v:.4f}" for k, v in values.items())
                  + f" lr {lr:.2e} t {timer():.0f}s waiting for data {waited:.0f}s", flush=True)
    seconds = timer()
    run.stream = stream = None  # the last references: the loader processes stop
    model.eval()
    model.cpu()
    return save(steps_done, seconds), seconds


def evaluate_saved(args, meta: dict) -> None:
    """Held-out zero-shot quality of the saved ``args.out`` (``--eval-n`` scenes, 0 skips),
    written into its meta.json."""
    if not args.eval_n:
        return
    from groundroll.zoo.openclip import load_open_clip_dir

    b = load_open_clip_dir(args.out)
    meta["held_out"] = zero_shot(b.model, b.preprocess, b.tokenizer, n=args.eval_n)
    meta["held_out"]["command"] = f"python training/eval_shapes.py {args.out} --n {args.eval_n}"
    write_meta(args.out, meta)
    print(json.dumps(meta["held_out"]), flush=True)


def false_negatives(img_sets, text_sets) -> torch.Tensor:
    """[B, 2B] bool: off-diagonal (image, text) pairs whose text describes a subset of the
    image's objects, so they are true pairs and must not count as negatives."""
    b = len(img_sets)
    valid = torch.tensor([[t <= s for t in text_sets] for s in img_sets])
    eye = torch.zeros_like(valid)
    eye[:, :b] = torch.eye(b, dtype=torch.bool)
    return valid & ~eye


def contrastive_loss(image_features, text_features, logit_scale, img_sets=None, text_sets=None,
                     *, drop: torch.Tensor | None = None):
    """Symmetric InfoNCE over [positives | hard negatives]; an off-diagonal pair whose text
    describes a subset of the image's objects is also true and is left out (``drop``, or
    computed from the label sets). Computed in float32, also inside an autocast region."""
    b = image_features.shape[0]
    with torch.autocast(image_features.device.type, enabled=False):
        logits = (logit_scale.float() * image_features.float()
                  @ text_features.float().T)  # [B, 2B]
    if drop is None:
        drop = false_negatives(img_sets, text_sets)
    logits = logits.masked_fill(drop.to(logits.device), float("-inf"))
    target = torch.arange(b, device=logits.device)
    loss_i = F.cross_entropy(logits, target)
    loss_t = F.cross_entropy(logits[:, :b].T, target)
    return (loss_i + loss_t) / 2


def cosine_lr(step: int, total: int, base: float, warmup: int,
              progress: float | None = None) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total`` steps, or at
    ``progress`` = 1 when the caller measures progress itself (a time budget, say)."""
    if step < warmup:
        return base * (step + 1) / warmup
    if progress is None:
        progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def save(model, model_cfg: dict, tokenizer, out: Path, meta: dict) -> None:
    """Write the model directory; each file is replaced whole, so a run stopped while
    saving (periodic saves included) leaves the previous complete file in place."""
    from safetensors.torch import save as to_bytes

    from groundroll._atomic import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous().cpu()
             for k, v in model.state_dict().items()}
    files = {
        "open_clip_model.safetensors": to_bytes(state),
        "open_clip_config.json": (json.dumps({"model_cfg": model_cfg,
                                              "preprocess_cfg": PREPROCESS_CFG}, indent=2)
                                  + "\n").encode(),
        "tokenizer.json": tokenizer.to_str(pretty=True).encode(),
        "meta.json": (json.dumps(meta, indent=2) + "\n").encode(),
    }
    for name, data in files.items():
        with atomic_write(out / name, force=True) as f:
            f.write(data)


def write_meta(out: Path, meta: dict) -> None:
    """Replace ``out/meta.json`` whole."""
    from groundroll._atomic import atomic_write

    with atomic_write(out / "meta.json", force=True, mode="w") as f:
        f.write(json.dumps(meta, indent=2) + "\n")


def record_held_out(model_dir: Path, result: dict) -> None:
    """Store an evaluation as ``held_out`` in ``model_dir/meta.json``."""
    meta = json.loads((model_dir / "meta.json").read_text())
    meta["held_out"] = result
    write_meta(model_dir, meta)


def base_meta(adapter: str, args, steps_done: int, seconds: float, n_params: int) -> dict:
    return {
        "adapter": adapter,
        "image_size": IMAGE_SIZE,
        "patch_size": PATCH_SIZE,
        "grid": [IMAGE_SIZE // PATCH_SIZE, IMAGE_SIZE // PATCH_SIZE],
        "mean": list(MEAN),
        "std": list(STD),
        "resize_mode": "longest",
        "context_length": CONTEXT_LENGTH,
        "labels": list(shapes.LABELS),
        "colors": list(shapes.COLORS),
        "shapes": list(shapes.SHAPES),
        "prompt_templates": list(TEMPLATES),
        "eval_template": EVAL_TEMPLATE,
        "n_params": n_params,
        "training": {"recipe": f"training/{'shapes_coca' if 'coca' in adapter else 'shapes_clip'}.py",
                     "steps": steps_done, "steps_requested": args.steps,
                     "max_minutes": args.max_minutes,
                     "batch_size": args.batch_size, "lr": args.lr,
                     "seed": args.seed, "seconds": round(seconds, 1),
                     "torch_threads": torch.get_num_threads(),
                     "init": None if getattr(args, "init", None) is None else str(args.init),
                     "train_seeds": "numpy Generator(seed) stream, scenes drawn on the fly",
                     "held_out": f"scene seeds >= {shapes.EVAL_SEED_OFFSET}"},
    }


@torch.no_grad()
def zero_shot(model, preprocess, tokenizer, *, n: int = 500, batch_size: int = 50,
              seed: int = shapes.EVAL_SEED_OFFSET, template: str = EVAL_TEMPLATE) -> dict:
    """Held-out zero-shot accuracy.

    single_object_top1: ``n`` held-out single-object scenes (scene seeds ``seed..seed+n-1``,
    default 128 x 160 images through the bundle's preprocess); prediction = argmax over the
    30 prompts ``template.format(label)``; correct when it equals the true label.
    single_object_colour_correct / shape_correct: the same predictions, scored on the
    colour word or the shape word alone.
    multi_object_precision_at_k: ``n`` held-out scenes with 1-4 objects (scene seeds
    ``seed + n ..``); for a scene with K objects, the fraction of the top-K prompts whose
    label is present, averaged over scenes.
    """
    from PIL import Image

    model.eval()
    text = tokenizer([template.format(lab) for lab in shapes.LABELS])
    text_features = F.normalize(model.encode_text(text), dim=-1)

    def features(scene_list):
        feats = []
        for i in range(0, len(scene_list), batch_size):
            chunk = scene_list[i:i + batch_size]
            x = torch.stack([preprocess(Image.fromarray(s.image)) for s in chunk])
            feats.append(F.normalize(model.encode_image(x), dim=-1))
        return torch.cat(feats)

    single = list(shapes.scenes(n, seed=seed, n_objects=1))
    sims = features(single) @ text_features.T
    pred = sims.argmax(-1)
    truth = torch.tensor([s.class_ids[0] for s in single])
    top1 = (pred == truth).float().mean().item()
    n_shapes = len(shapes.SHAPES)  # LABELS is colour-major
    colour_top1 = (pred // n_shapes == truth // n_shapes).float().mean().item()
    shape_top1 = (pred % n_shapes == truth % n_shapes).float().mean().item()

    multi = list(shapes.scenes(n, seed=seed + n))
    sims = features(multi) @ text_features.T
    precisions = []
    for s, row in zip(multi, sims):
        k = len(s.labels)
        top = row.topk(k).indices.tolist()
        precisions.append(len(set(top) & set(s.class_ids)) / k)
    return {"single_object_top1": round(top1, 4),
            "single_object_colour_correct": round(colour_top1, 4),
            "single_object_shape_correct": round(shape_top1, 4),
            "multi_object_precision_at_k": round(float(np.mean(precisions)), 4),
            "n_single": n, "n_multi": n, "eval_seed": seed, "template": template}


class Timer:
    def __init__(self):
        self.start = time.time()

    def __call__(self) -> float:
        return time.time() - self.start
