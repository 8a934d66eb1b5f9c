"""Train shapes-captioner: a Hugging Face ``VisionEncoderDecoderModel`` whose encoder is
the vision tower of ``bundled:shapes-clip`` (converted to ``CLIPVisionModel``) and whose
decoder is a tiny GPT-2 with cross-attention, on captions that name every object of a
synthetic shapes scene from left to right.

    # the bundled model: six stages (model_cards/shapes-captioner.md): encoder frozen,
    # then tuned at a fraction of the learning rate with scenes on training photos
    python training/shapes_captioner.py --out STAGE1 --encoder-lr 0 --threads 1 --max-minutes 22 --eval-n 0
    python training/shapes_captioner.py --out STAGE2 --init STAGE1 \
        --encoder-lr 0 --lr 5e-4 --warmup 20 --seed 1 --threads 2 --max-minutes 20 --eval-n 0
    python training/shapes_captioner.py --out STAGE3 --init STAGE2 --encoder-lr 0.2 --lr 5e-4 \
        --warmup 20 --seed 2 --photo-fraction 0.5 --threads 1 --max-minutes 40 --eval-n 0
    python training/shapes_captioner.py --out STAGE4 --init STAGE3 --encoder-lr 0.3 --lr 5e-4 \
        --warmup 20 --seed 3 --photo-fraction 0.6 --threads 1 --max-minutes 36
    # stage 5: more backgrounds (graphics, photos turned to random hues)
    python training/shapes_captioner.py --out STAGE5 --init STAGE4 --encoder-lr 0.5 --lr 5e-4 \
        --warmup 20 --seed 6 --photo-fraction 0.7 --extra-photos --recolour 0.7 --threads 1 \
        --max-minutes 55 --eval-n 0
    # stage 6: coloured blobs that are not objects on half the photo scenes
    python training/shapes_captioner.py --out STAGE6 --init STAGE5 --encoder-lr 0.3 --lr 3e-4 \
        --warmup 20 --seed 7 --photo-fraction 0.6 --extra-photos --recolour 0.5 \
        --distractors 0.5 --threads 1 --max-minutes 38 --eval-n 0

``--init DIR`` continues from a saved run (a later stage, recorded in meta.json's
``stages``). The encoder starts from shapes-clip's weights (the script checks that the converted tower
gives open_clip's hidden states before ``ln_post``); ``--encoder-lr`` scales its learning
rate (0 keeps it frozen). Weights are saved in float16 with ``save_pretrained``, with the
word-level tokenizer, a ``CLIPImageProcessor`` for square inputs and a meta.json saying
that ``groundroll.load`` letterboxes first (long side to 96 px, black padding).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from groundroll.data import shapes  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLIP_DIR = ROOT / "groundroll" / "zoo" / "bundled" / "shapes-clip"
IMAGE_SIZE = 96
PATCH_SIZE = 8
MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip's OPENAI_DATASET_MEAN / STD
STD = (0.26862954, 0.26130258, 0.27577711)
SPECIALS = ("[PAD]", "[BOS]", "[EOS]", "[UNK]")
MAX_LENGTH = 24  # the longest caption (4 objects) is 15 words + [BOS] / [EOS]
#: (height, width) of training scenes before letterboxing, with their weights: mostly the
#: held-out 128 x 160, also square, portrait and other landscape layouts.
TRAIN_SIZES = (((128, 160), 0.4), ((96, 96), 0.2), ((160, 128), 0.15), ((112, 176), 0.15),
               ((144, 144), 0.1))


# ----------------------------------------------------------------------------- captions

def vocabulary() -> list[str]:
    """Special tokens, then the caption words: ``a``, ``and``, ``,``, colours, shapes."""
    return [*SPECIALS, "a", "and", ",", *shapes.COLORS, *shapes.SHAPES]


def left_to_right(scene: shapes.Scene) -> list[int]:
    """Object indices ordered by the column of their visible pixels' centroid (then row)."""
    keys = []
    for j, mask in enumerate(scene.masks):
        rows, cols = np.nonzero(mask)
        keys.append((cols.mean(), rows.mean(), j))
    return [j for _, _, j in sorted(keys)]


def target_caption(scene: shapes.Scene) -> str:
    """The caption the model learns: every object, left to right,
    ``"a red circle, a blue star and a green square"``."""
    return shapes.caption_for(scene.labels, order=left_to_right(scene))


def build_tokenizer():
    """``PreTrainedTokenizerFast`` over a ``tokenizers`` WordLevel vocabulary (lower-cased,
    split on whitespace and punctuation) with ``[BOS]``/``[EOS]``/``[PAD]``/``[UNK]``."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(vocabulary())}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase(),
                                           normalizers.StripAccents()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # "circle , a" -> "circle, a"
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="[BOS]", eos_token="[EOS]", pad_token="[PAD]",
        unk_token="[UNK]", model_max_length=MAX_LENGTH)


# ----------------------------------------------------------------------------- model

def encoder_config():
    """``CLIPVisionConfig`` of shapes-clip's tower: 96 px, patch 8, width 128, 4 layers,
    4 heads of 32, MLP 512, exact GELU, LayerNorm eps 1e-5 (open_clip's defaults)."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                            num_attention_heads=4, image_size=IMAGE_SIZE,
                            patch_size=PATCH_SIZE, hidden_act="gelu", layer_norm_eps=1e-5,
                            projection_dim=128, attention_dropout=0.0)


def decoder_config(tokenizer, layers: int):
    """A GPT-2 with cross-attention: width 128, ``layers`` layers, 4 heads, no dropout."""
    from transformers import GPT2Config

    return GPT2Config(vocab_size=len(tokenizer), n_positions=MAX_LENGTH, n_embd=128,
                      n_layer=layers, n_head=4, n_inner=512, activation_function="gelu_new",
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                      add_cross_attention=True, is_decoder=True,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id)


def open_clip_to_hf_vision(state: dict) -> dict:
    """open_clip ``visual.*`` weights -> ``CLIPVisionTransformer`` state dict keys (a
    ``CLIPVisionModel`` holds them under ``vision_model.``, or at the top level in
    transformers >= 5)."""
    out = {
        "embeddings.patch_embedding.weight": state["visual.conv1.weight"],
        "embeddings.class_embedding": state["visual.class_embedding"],
        "embeddings.position_embedding.weight":
            state["visual.positional_embedding"],
        "pre_layrnorm.weight": state["visual.ln_pre.weight"],
        "pre_layrnorm.bias": state["visual.ln_pre.bias"],
        "post_layernorm.weight": state["visual.ln_post.weight"],
        "post_layernorm.bias": state["visual.ln_post.bias"],
    }
    layers = sorted({int(k.split(".")[3]) for k in state
                     if k.startswith("visual.transformer.resblocks.")})
    names = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
             "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    for i in layers:
        src, dst = f"visual.transformer.resblocks.{i}.", f"encoder.layers.{i}."
        for old, new in names.items():
            for p in ("weight", "bias"):
                out[f"{dst}{new}.{p}"] = state[f"{src}{old}.{p}"]
        for p in ("weight", "bias"):
            q, k, v = state[f"{src}attn.in_proj_{p}"].chunk(3)
            for name, value in (("q", q), ("k", k), ("v", v)):
                out[f"{dst}self_attn.{name}_proj.{p}"] = value
    return out


def shapes_clip_encoder():
    """``CLIPVisionModel`` with shapes-clip's visual weights (float32)."""
    from safetensors.torch import load_file
    from transformers import CLIPVisionModel

    state = {k: v.float() for k, v in load_file(str(CLIP_DIR / "open_clip_model.safetensors"))
             .items()}
    encoder = CLIPVisionModel(encoder_config())
    prefix = "vision_model." if any(k.startswith("vision_model.")
                                    for k in encoder.state_dict()) else ""
    converted = {prefix + k: v for k, v in open_clip_to_hf_vision(state).items()}
    missing, unexpected = encoder.load_state_dict(converted, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"conversion left out {missing} and did not use {unexpected}")
    return encoder


@torch.no_grad()
def check_conversion(encoder, *, tolerance: float = 1e-5) -> float:
    """Largest difference between the converted tower's last hidden state and open_clip's
    tokens before ``ln_post`` on a held-out scene; raises above ``tolerance``."""
    from groundroll.zoo.openclip import load_open_clip_dir
    from PIL import Image

    bundle = load_open_clip_dir(CLIP_DIR)
    visual = bundle.model.visual
    x = bundle.preprocess(Image.fromarray(shapes.scene(shapes.EVAL_SEED_OFFSET).image))[None]
    captured = {}
    handle = visual.ln_post.register_forward_hook(
        lambda m, args, out: captured.setdefault("tokens", args[0]))
    try:
        visual(x)
    finally:
        handle.remove()
    reference = captured["tokens"]  # [1, 145, 128]
    ours = encoder.eval()(pixel_values=x).last_hidden_state
    diff = (ours - reference).abs().max().item()
    if diff > tolerance:
        raise RuntimeError(f"converted vision tower differs from open_clip by {diff:.2e} "
                           f"(> {tolerance:.0e})")
    return diff


def build_model(tokenizer, layers: int):
    from transformers import AutoModelForCausalLM, VisionEncoderDecoderModel

    decoder = AutoModelForCausalLM.from_config(decoder_config(tokenizer, layers))
    model = VisionEncoderDecoderModel(encoder=shapes_clip_encoder(), decoder=decoder)
    model.config.decoder_start_token_id = tokenizer.bos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.decoder_start_token_id = tokenizer.bos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.max_length = MAX_LENGTH
    return model


# ----------------------------------------------------------------------------- data

def preprocess_images(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` scenes -> ``[B, 3, 96, 96]`` model input, letterboxed exactly as
    the loaded bundle's preprocess letterboxes."""
    from PIL import Image

    from groundroll.zoo.hf import letterbox

    x = np.stack([np.asarray(letterbox(Image.fromarray(im), IMAGE_SIZE)) for im in images])
    x = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def train_scene(rng: np.random.Generator, photo_fraction: float = 0.0,
                photos: tuple[str, ...] = shapes.TRAIN_PHOTOS,
                recolour: float = 0.0, distractors: float = 0.0,
                glossy: float = 0.0) -> shapes.Scene:
    """A scene of 1-4 objects in one of ``TRAIN_SIZES``, object radius 10-28 % of the
    short side, on a crop of ``photos`` with probability ``photo_fraction`` and otherwise
    on a flat, gradient or noise background. A photo background is recoloured with
    probability ``recolour`` (:func:`recolour_background`), then gets coloured blobs
    with probability ``distractors`` (:func:`paint_distractors`, each blob glossy with
    probability ``glossy``). (No draw is spent on a
    choice whose probability is 0, so earlier recipes replay exactly.)"""
    sizes, weights = zip(*TRAIN_SIZES)
    size = sizes[int(rng.choice(len(sizes), p=weights))]
    photo = photo_fraction > 0 and rng.random() < photo_fraction
    drawn = shapes.scene(rng, size=size, radius=(0.1, 0.28),
                         background="photo" if photo else None, photos=photos)
    if photo and recolour > 0 and rng.random() < recolour:
        drawn.image = recolour_background(rng, drawn.image, drawn.label_map == 0)
    if photo and distractors > 0 and rng.random() < distractors:
        drawn.image = paint_distractors(rng, drawn.image, drawn.label_map == 0, glossy)
    return drawn


def paint_distractors(rng: np.random.Generator, image: np.ndarray,
                      background: np.ndarray, glossy: float = 0.0) -> np.ndarray:
    """``image`` with one to three irregular blobs (a smoothed random field cut at a
    level; pieces under 3 % of the image dropped, so none passes for a small shape)
    painted over its ``background`` pixels in saturated colours near the palette's,
    keeping the photo's light and shade: large coloured regions that are not objects, as
    a red motorcycle behind the shapes would be. With probability ``glossy`` a blob is
    also lit as a painted object is (:func:`_gloss`). The objects keep their pixels."""
    from scipy import ndimage
    from skimage import morphology

    out = image.copy()
    h, w = background.shape
    palette = np.array(list(shapes.COLORS.values()), np.float64)
    grey = image.astype(np.float64).mean(-1, keepdims=True)
    shade = np.clip(grey / max(grey.mean(), 1.0), 0.5, 1.5) ** 0.5
    for _ in range(int(rng.integers(1, 4))):
        field = ndimage.gaussian_filter(rng.normal(size=(h, w)),
                                        sigma=rng.uniform(0.06, 0.15) * min(h, w))
        blob = field > np.quantile(field, 1 - rng.uniform(0.06, 0.25))
        blob = morphology.remove_small_objects(blob, max_size=int(0.03 * h * w))
        colour = palette[int(rng.integers(len(palette)))] + rng.uniform(-35, 35, size=3)
        painted = colour * shade
        if glossy > 0 and rng.random() < glossy:
            painted = _gloss(rng, painted, blob)
        painted = np.clip(painted, 0, 255)
        where = blob & background
        out[where] = painted[where].astype(np.uint8)
    return out


def _gloss(rng: np.random.Generator, painted: np.ndarray, blob: np.ndarray) -> np.ndarray:
    """``painted`` (float ``[H, W, 3]``) lit over the pixels of ``blob`` as a glossy
    painted surface is: lightness rising from 0.55-0.8 to 1.1-1.35 along a random
    direction across the blob, and one or two specular highlights (Gaussian spots
    centred on blob pixels, blended towards white), as on a motorcycle's tank. A palette
    object is one flat colour, so shading of this kind says "not an object"."""
    rows, cols = np.nonzero(blob)
    if rows.size == 0:
        return painted
    h, w = blob.shape
    grid_r, grid_c = np.mgrid[0:h, 0:w].astype(np.float64)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * grid_c + np.sin(angle) * grid_r
    inside = ramp[rows, cols]
    ramp = np.clip((ramp - inside.min()) / max(np.ptp(inside), 1e-6), 0, 1)
    low, high = rng.uniform(0.55, 0.8), rng.uniform(1.1, 1.35)
    out = painted * (low + (high - low) * ramp)[..., None]
    for _ in range(int(rng.integers(1, 3))):
        k = int(rng.integers(rows.size))
        sigma = rng.uniform(0.02, 0.08) * min(h, w)
        spot = np.exp(-((grid_r - rows[k]) ** 2 + (grid_c - cols[k]) ** 2)
                      / (2 * sigma ** 2)) * rng.uniform(0.5, 0.9)
        out = out * (1 - spot[..., None]) + 255.0 * spot[..., None]
    return out


def recolour_background(rng: np.random.Generator, image: np.ndarray,
                        background: np.ndarray) -> np.ndarray:
    """``image`` with the pixels where ``background`` is true turned about the grey axis
    by a random hue angle and their saturation scaled by 0.5-2: a few photos become
    backgrounds of every hue, so that a colour alone does not make an object. The
    objects keep their exact palette colours."""
    theta = rng.uniform(0, 2 * np.pi)
    saturation = rng.uniform(0.5, 2.0)
    axis = np.full(3, 1 / np.sqrt(3))
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]],
                      [-axis[1], axis[0], 0]])
    turn = (np.cos(theta) * np.eye(3) + np.sin(theta) * cross
            + (1 - np.cos(theta)) * np.outer(axis, axis))             # Rodrigues
    pixels = image[background].astype(np.float64)
    grey = pixels.mean(-1, keepdims=True)
    pixels = grey + saturation * (pixels - grey) @ turn.T
    out = image.copy()
    out[background] = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    return out


def make_batch(rng: np.random.Generator, batch_size: int, tokenizer,
               photo_fraction: float = 0.0, photos: tuple[str, ...] = shapes.TRAIN_PHOTOS,
               recolour: float = 0.0, distractors: float = 0.0, glossy: float = 0.0):
    """Pixels ``[B, 3, 96, 96]``, decoder inputs ``[B, T]`` (``[BOS]`` + caption) and
    labels ``[B, T]`` (caption + ``[EOS]``, padding -100)."""
    scenes = [train_scene(rng, photo_fraction, photos, recolour, distractors, glossy)
              for _ in range(batch_size)]
    ids = [tokenizer(target_caption(s), add_special_tokens=False)["input_ids"] for s in scenes]
    longest = max(len(i) for i in ids) + 1
    inputs = torch.full((batch_size, longest), tokenizer.pad_token_id)
    labels = torch.full((batch_size, longest), -100)
    for b, row in enumerate(ids):
        inputs[b, :len(row) + 1] = torch.tensor([tokenizer.bos_token_id, *row])
        labels[b, :len(row) + 1] = torch.tensor([*row, tokenizer.eos_token_id])
    return preprocess_images([s.image for s in scenes]), inputs, labels


# ----------------------------------------------------------------------------- training

def cosine_lr(step: int, total_seconds: float, elapsed: float, base: float, warmup: int):
    """Linear warm-up over ``warmup`` steps, then cosine decay over the time budget."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, elapsed / total_seconds)))


def param_groups(model, lr: float, encoder_lr: float) -> list[dict]:
    """Decoder at ``lr``; encoder at ``lr * encoder_lr`` (frozen when 0)."""
    decoder = [p for p in model.decoder.parameters()]
    encoder = [p for p in model.encoder.parameters()]
    if encoder_lr == 0:
        for p in encoder:
            p.requires_grad_(False)
        return [{"params": decoder, "scale": 1.0}]
    return [{"params": decoder, "scale": 1.0}, {"params": encoder, "scale": encoder_lr}]


def train_photos(args) -> tuple[str, ...]:
    """The photos a run crops: ``shapes.TRAIN_PHOTOS``, with ``--extra-photos`` also
    ``shapes.EXTRA_TRAIN_PHOTOS``."""
    return shapes.TRAIN_PHOTOS + (shapes.EXTRA_TRAIN_PHOTOS if args.extra_photos else ())


def train(model, tokenizer, args) -> tuple[int, float, list[dict]]:
    rng = np.random.default_rng(args.seed)
    groups = param_groups(model, args.lr, args.encoder_lr)
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    model.train()
    if args.encoder_lr == 0:
        model.encoder.eval()
    start, history, step = time.time(), [], 0
    budget = 60 * args.max_minutes
    while step < args.steps and time.time() - start < budget:
        elapsed = time.time() - start
        lr = cosine_lr(step, budget, elapsed, args.lr, args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr * g["scale"]
        pixels, inputs, labels = make_batch(rng, args.batch_size, tokenizer,
                                            args.photo_fraction, train_photos(args),
                                            args.recolour, args.distractors, args.glossy)
        logits = model(pixel_values=pixels, decoder_input_ids=inputs,
                       decoder_attention_mask=(inputs != tokenizer.pad_token_id).long()).logits
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0:
            history.append({"step": step, "loss": round(loss.item(), 4),
                            "seconds": round(elapsed, 1)})
            print(f"step {step} loss {loss.item():.4f} lr {lr:.2e} t {elapsed:.0f}s",
                  flush=True)
        step += 1
    model.eval()
    return step, time.time() - start, history


# ----------------------------------------------------------------------------- saving

def image_processor():
    """``CLIPImageProcessor`` that is exact for square inputs (a 96 x 96 input is left as
    it is, then normalised); ``groundroll.load`` letterboxes other inputs first."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(do_resize=True, size={"shortest_edge": IMAGE_SIZE},
                              resample=3, do_center_crop=True,
                              crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                              do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                              image_mean=list(MEAN), image_std=list(STD),
                              do_convert_rgb=True)


def save(model, tokenizer, out: Path, meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.half().save_pretrained(out)
    model.float()
    tokenizer.save_pretrained(out)
    image_processor().save_pretrained(out)
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def build_meta(args, argv, model, steps: int, seconds: float, history, diff: float) -> dict:
    return {
        "family": "hf_vision_encoder_decoder",
        "kind": "hf_captioner",
        "model_class": "VisionEncoderDecoderModel",
        "data": "groundroll.data.shapes",
        "image_size": IMAGE_SIZE,
        "patch_size": PATCH_SIZE,
        "grid": [IMAGE_SIZE // PATCH_SIZE, IMAGE_SIZE // PATCH_SIZE],
        "mean": list(MEAN),
        "std": list(STD),
        "resize_mode": "longest",
        "fill": 0,
        "preprocess_note": ("groundroll.load letterboxes: long side to 96 px (PIL bicubic), "
                            "centred on black, then the saved CLIPImageProcessor "
                            "normalises; that processor alone is exact for 96 x 96 inputs "
                            "only"),
        "caption_order": "objects left to right by the centroid column of their visible "
                         "pixels",
        "colors": list(shapes.COLORS),
        "shapes": list(shapes.SHAPES),
        "max_length": MAX_LENGTH,
        "params": sum(p.numel() for p in model.parameters()),
        "weights_dtype": "float16",
        "encoder": {"init": "bundled:shapes-clip visual tower",
                    "conversion_max_abs_diff": diff,
                    "lr_scale": args.encoder_lr,
                    "frozen": args.encoder_lr == 0},
        "training": {"recipe": "training/shapes_captioner.py",
                     "command": "python training/shapes_captioner.py " + " ".join(argv),
                     "steps": steps, "batch_size": args.batch_size, "lr": args.lr,
                     "warmup": args.warmup, "seed": args.seed,
                     "seconds": round(seconds, 1), "torch_threads": torch.get_num_threads(),
                     "scenes_seen": steps * args.batch_size,
                     "train_seeds": "numpy Generator(seed) stream, scenes drawn on the fly",
                     "photo_fraction": args.photo_fraction,
                     "photos": list(train_photos(args)) if args.photo_fraction else [],
                     "recolour": args.recolour, "distractors": args.distractors,
                     "glossy": args.glossy,
                     "held_out": f"scene seeds >= {shapes.EVAL_SEED_OFFSET}"},
        "history": history,
    }


def _stage(meta: dict) -> dict:
    """One run's entry in meta.json's ``stages``."""
    return ({k: meta["training"].get(k, 0.0) for k in ("command", "steps", "lr", "seed",
                                                        "seconds", "photo_fraction",
                                                        "recolour", "distractors",
                                                        "glossy")}
            | {"encoder_lr_scale": meta["encoder"]["lr_scale"]})


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=1_000_000)
    p.add_argument("--max-minutes", type=float, default=22.0,
                   help="wall-time budget; the learning rate decays over it")
    p.add_argument("--batch-size", type=int, default=48)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--encoder-lr", type=float, default=0.0,
                   help="encoder learning rate as a fraction of --lr (0: frozen; with photo"
                        " scenes 0.2 captioned unseen backgrounds better than frozen)")
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--photo-fraction", type=float, default=0.0,
                   help="share of training scenes drawn on crops of shapes.TRAIN_PHOTOS")
    p.add_argument("--extra-photos", action="store_true",
                   help="also crop shapes.EXTRA_TRAIN_PHOTOS")
    p.add_argument("--recolour", type=float, default=0.0,
                   help="share of photo scenes whose background is turned to a random hue")
    p.add_argument("--distractors", type=float, default=0.0,
                   help="share of photo scenes given coloured blobs that are not objects")
    p.add_argument("--glossy", type=float, default=0.0,
                   help="share of those blobs shaded with highlights, as painted things are")
    p.add_argument("--layers", type=int, default=3, help="decoder layers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", type=Path, default=None,
                   help="continue from a saved shapes-captioner directory")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--eval-n", type=int, default=300, help="held-out scenes; 0 skips")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, args.layers)
    diff = check_conversion(model.encoder)
    print(f"converted vision tower matches open_clip (max abs diff {diff:.1e})", flush=True)
    stages = []
    if args.init is not None:
        from transformers import VisionEncoderDecoderModel

        model = VisionEncoderDecoderModel.from_pretrained(args.init, dtype=torch.float32)
        previous = json.loads((args.init / "meta.json").read_text())
        stages = previous.get("stages") or [_stage(previous)]
    steps, seconds, history = train(model, tokenizer, args)
    meta = build_meta(args, argv, model, steps, seconds, history, diff)
    meta["stages"] = stages + [_stage(meta)]
    meta["training"]["steps_all_stages"] = sum(st["steps"] for st in meta["stages"])
    meta["training"]["seconds_all_stages"] = round(sum(st["seconds"] for st in meta["stages"]),
                                                   1)
    save(model, tokenizer, args.out, meta)
    print(f"saved {args.out} ({meta['params']} params, {steps} steps, {seconds:.0f}s)",
          flush=True)
    if args.eval_n:
        import eval_captioner

        eval_captioner.main([str(args.out), "--n", str(args.eval_n), "--update-meta",
                             "--threads", str(args.threads)])
    return meta


if __name__ == "__main__":
    main()
