"""Where word grounding loses on scenes of another style: the default call of
``gr.ground_caption`` on ``benchmarks/captions.py``'s held-out scenes, per content word,
split by what could explain a miss.

    OMP_NUM_THREADS=1 python benchmarks/caption_failures.py --n 30

Per set and per group of content words: pointing (15 px and strict) and word-mask IoU of
the default call (as ``benchmarks/captions.py`` scores them), and the same two for exact
maps, each object's mask averaged over the model's patches and sent through the same
unletterbox, refinement and threshold ("exact patch maps": what the pipeline makes of a
perfect patch-level map; below 1 where an object is small against a patch). Groups:

* the model's own log-probability of the word (teacher-forced true caption): does the
  model predict the word it is asked to ground?
* the object's visible area as a fraction of the model input;
* the variant scenes' background (stripes, checker, smooth noise, grain);
* the image's aspect (height / width): the letterbox sends a wide or tall image's grid
  back to the pixels differently.

Then the model's greedy captions of the same scenes: content words right, order ignored
(multiset overlap with the true caption's colour and shape words over the longer list),
per background: does the model see the objects at all?
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import groundroll as gr  # noqa: E402
from groundroll import masks as M  # noqa: E402
from groundroll.captioning import refine_word_maps, resolve_captioner  # noqa: E402
from groundroll.captioning.api import DEFAULT_CAPTIONER, MASK_THRESHOLD  # noqa: E402
from groundroll.data import shapes  # noqa: E402

from captions import TOLERANCE, _distance, held_out  # noqa: E402

VOCABULARY = set(shapes.COLORS) | set(shapes.SHAPES)
LOGP_BINS = ((-np.inf, -3.0), (-3.0, -1.0), (-1.0, -0.2), (-0.2, np.inf))
AREA_BINS = ((0.0, 0.005), (0.005, 0.02), (0.02, 0.05), (0.05, 1.0))
ASPECT_BINS = ((0.0, 0.75), (0.75, 1.33), (1.33, np.inf))


def exact_patch_maps(it: dict, geometry, grid: tuple[int, int]) -> np.ndarray:
    """``[W, H, W_img]`` in [0, 1]: per content word, its object's mask averaged over the
    model's patches and unletterboxed as ``ground_caption`` does its maps (zeros for the
    other words)."""
    gh, gw = grid
    h, w = geometry.model_hw
    maps = np.zeros((len(it["owners"]), gh, gw), np.float32)
    for word, k in enumerate(it["owners"]):
        if k is not None:
            inside = M.letterbox_image(it["masks"][k].astype(np.float32), geometry, fill=0)
            maps[word] = inside.reshape(gh, h // gh, gw, w // gw).mean((1, 3))
    heat = M.normalize_maps(M.unletterbox(maps, geometry, order=1), how="minmax")
    return np.clip(heat, 0.0, 1.0).astype(np.float32)


def score_words(heat, masks, it) -> list[tuple[bool, bool, float]]:
    """Per content word: ``(strict hit, hit within TOLERANCE px, mask IoU)``."""
    out = []
    for word, k in enumerate(it["owners"]):
        if k is None:
            continue
        obj = it["masks"][k]
        top = np.unravel_index(int(np.argmax(heat[word])), obj.shape)
        iou = np.logical_and(masks[word], obj).sum() / max(1, np.logical_or(masks[word],
                                                                           obj).sum())
        out.append((bool(obj[top]), bool(_distance(it, k)[top] <= TOLERANCE), float(iou)))
    return out


def word_rows(cm, items: list[dict], grid, threshold: float) -> list[dict]:
    rows = []
    for it in items:
        image = it["image"]
        res = gr.ground_caption(image, it["caption"], model=cm)
        geometry = M.letterbox_geometry(image.shape[:2], cm.image_size, mode="pad")
        exact = refine_word_maps(exact_patch_maps(it, geometry, grid), image,
                                 threshold=threshold)
        ours = score_words(res.heatmaps, res.masks, it)
        best = score_words(*exact, it)
        model_area = np.prod(geometry.resized_hw) / np.prod(geometry.model_hw)
        content = [(w, k) for w, k in enumerate(it["owners"]) if k is not None]
        for (word, k), (strict, near, iou), (_, exact_near, exact_iou) in zip(content, ours,
                                                                                best):
            rows.append({"logp": float(res.logprobs[word]), "strict": strict, "near": near,
                         "iou": iou, "exact_near": exact_near, "exact_iou": exact_iou,
                         "area": float(it["masks"][k].mean() * model_area),
                         "aspect": image.shape[0] / image.shape[1],
                         "background": it.get("background", "training style")})
    return rows


def _line(label: str, rows: list[dict]) -> str:
    if not rows:
        return f"  {label:<22} {0:>5}"
    mean = {key: np.mean([r[key] for r in rows]) for key in
            ("near", "strict", "iou", "exact_near", "exact_iou")}
    return (f"  {label:<22} {len(rows):>5} {mean['near']:8.3f} {mean['strict']:8.3f}"
            f" {mean['iou']:8.3f} {mean['exact_near']:10.3f} {mean['exact_iou']:10.3f}")


def _binned(rows, key, bins, fmt) -> list[str]:
    return [_line(fmt(lo, hi), [r for r in rows if lo <= r[key] < hi]) for lo, hi in bins]


def greedy_content(cm, items: list[dict]) -> dict[str, tuple[int, int]]:
    """Per background: ``(content words right, order ignored; the longer list's length)``
    summed over the greedy captions of ``items``."""
    out: dict[str, list[int]] = {}
    for it in items:
        caption = gr.ground_caption(it["image"], model=cm, method="cross",
                                    refine="none").caption

        def words(text):
            return Counter(w.strip(",.") for w in text.split() if w.strip(",.") in VOCABULARY)

        got, want = words(caption), words(it["caption"])
        for key in (it.get("background", "training style"), "all"):
            right, total = out.setdefault(key, [0, 0])
            out[key] = [right + sum((got & want).values()),
                        total + max(sum(got.values()), sum(want.values()))]
    return {k: (v[0], v[1]) for k, v in out.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=DEFAULT_CAPTIONER)
    p.add_argument("--n", type=int, default=30, help="held-out scenes per generator")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    bundle = gr.zoo.load(args.model)
    cm = resolve_captioner(bundle)
    grid = tuple(bundle.meta["grid"])
    threshold = float(cm.default("mask_threshold", MASK_THRESHOLD))
    print(f"{args.model}: default call {cm.defaults or 'library defaults'}; {args.n}"
          " held-out scenes per set")
    for name, items in held_out(args.n).items():
        rows = word_rows(cm, items, grid, threshold)
        print(f"\n{name}: {'words':>28} {'pt 15px':>8} {'pointing':>8} {'word IoU':>8}"
              f" {'exact 15px':>10} {'exact IoU':>10}")
        print(_line("all", rows))
        print(" word log-probability")
        print("\n".join(_binned(rows, "logp", LOGP_BINS, lambda lo, hi: f"[{lo:g}, {hi:g})")))
        print(" object area / model input")
        print("\n".join(_binned(rows, "area", AREA_BINS, lambda lo, hi: f"[{lo:g}, {hi:g})")))
        print(" image height / width")
        print("\n".join(_binned(rows, "aspect", ASPECT_BINS,
                                lambda lo, hi: f"[{lo:g}, {hi:g})")))
        kinds = sorted({r["background"] for r in rows})
        if len(kinds) > 1:
            print(" background")
            for kind in kinds:
                print(_line(kind, [r for r in rows if r["background"] == kind]))
        print(" greedy captions: content words right, order ignored")
        for kind, (right, total) in sorted(greedy_content(cm, items).items()):
            print(f"  {kind:<22} {right / max(1, total):8.3f}  ({right} of {total})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
