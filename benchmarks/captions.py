"""Word grounding in captions on held-out scenes: every ``ground_caption`` method and the
peers a user would pick instead, run through their own libraries.

    OMP_NUM_THREADS=1 python benchmarks/captions.py --n 60            # table
    OMP_NUM_THREADS=1 python benchmarks/captions.py --n 60 --json out.json

Protocol
--------
* Model: an image captioner (default ``bundled:shapes-captioner``).
* Held-out scenes from three sets: ``shapes`` (``groundroll.data.shapes`` at seeds
  ``>= EVAL_SEED_OFFSET``); ``photo`` (the same generator's objects on crops of
  ``shapes.EVAL_PHOTOS``, photos no training recipe crops, at sizes of 96-256 px per
  side); and ``variant`` (``benchmarks/segmentation.py``'s :func:`variant_scene`: other
  sizes, object counts and radii; stripes, checkers, smooth colour noise or grain behind
  objects with brightness jitter), a generator no model was trained on.
* Calibration scenes (the mask threshold, ``--write-defaults``) come in thirds: the
  shapes style, the variant style, and objects on crops of ``shapes.TRAIN_PHOTOS``;
  their seeds are disjoint from the held-out ones and no held-out photo is among them.
* Caption: the scene's true caption, objects left to right (the captioner's convention),
  teacher-forced; each content word (a colour or a shape) belongs to one object, whose
  exact mask is the reference.
* Pointing game: the word map's maximum falls inside its object (strict), or within 15
  pixels of it (the game's usual tolerance, Zhang et al. 2016); "pt raw": strict, on the
  method's map before the superpixel refinement. Word-mask IoU: the
  word's mask (``ground_caption``'s masks; for the peers the same refinement and
  threshold applied to their maps, :func:`groundroll.captioning.refine_word_maps`) against
  the object's mask. Every method's heatmap is refined the same way before it is read. Colour-word correlation: Pearson correlation of the maps of two colour
  words of the same caption (lower: the maps tell objects apart).
* Deletion AUC (``--faith`` scenes): the probability of the word's first token as the
  word map's most important pixels turn black first (10 steps; lower is more faithful).
* Peers: captum ``IntegratedGradients`` (32 steps, black baseline) of the word's
  log-probability with respect to the input pixels, channel-summed absolute values;
  pytorch-grad-cam ``GradCAM`` on the vision encoder's last block (its first layer norm)
  with the word's log-probability as the target.
* Sub-patch shifts (``--shifts``): each of groundroll's methods is also run with
  ``ground_caption(..., shifts=k)`` for every ``k`` given (rows ``METHOD/sK``; ``k = 1``
  is the method alone), and the calibration picks among all of them.
* Seconds per caption: every word of one caption, one thread.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import groundroll as gr  # noqa: E402
from groundroll import masks as M  # noqa: E402
from groundroll.captioning import (METHODS, refine_word_maps, resolve_captioner,  # noqa: E402
                                   word_masks)
from groundroll.captioning.api import DEFAULT_CAPTIONER  # noqa: E402
from groundroll.data import shapes  # noqa: E402
from groundroll.evaluate import deletion_curve  # noqa: E402

PEERS = ("captum-ig", "gradcam")
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
#: The pointing game's tolerance in pixels (Zhang et al. 2016, "Top-down neural
#: attention by excitation backprop"): a hit when the maximum lies within it of the object.
TOLERANCE = 15
CALIB_SEED = 200_000


def left_to_right(masks: np.ndarray) -> list[int]:
    """Object indices by the column (then row) of their visible pixels' centroid."""
    keys = []
    for k, m in enumerate(masks):
        rows, cols = np.nonzero(m)
        keys.append((cols.mean(), rows.mean(), k))
    return [k for _, _, k in sorted(keys)]


def held_out(n: int, *, seed: int = 0, photos=shapes.EVAL_PHOTOS) -> dict[str, list[dict]]:
    """``n`` scenes of each set, with their captions and word owners; ``seed`` shifts
    every set's seeds (the calibration scenes' seeds are disjoint), ``photos`` are what
    the photo set crops."""
    from segmentation import photo_scene, variant_scene

    out = {"shapes": [{"image": s.image, "masks": s.masks, "labels": list(s.labels)}
                      for s in shapes.scenes(n, seed=shapes.EVAL_SEED_OFFSET + seed)],
           "photo": [photo_scene(seed + i, photos) for i in range(n)],
           "variant": [variant_scene(seed + i) for i in range(n)]}
    for items in out.values():
        for it in items:
            order = left_to_right(it["masks"])
            it["caption"] = shapes.caption_for(it["labels"], order=order)
            # each whitespace word -> the object it names (None: "a", "and")
            objects, current, owners = iter(order), None, []
            for word in it["caption"].split():
                if word == "a":
                    current = next(objects)
                owners.append(None if word in ("a", "and") else current)
            it["owners"] = owners
    return out


# ----------------------------------------------------------------------------- peers

class _WordScore(torch.nn.Module):
    """pixels -> the log-probability of one word's tokens (teacher-forced)."""

    def __init__(self, cm, ids: list[int], positions: list[int], start: list[int]):
        super().__init__()
        self.cm, self.model = cm, cm.model
        self.full = torch.tensor([start + ids])
        self.rows = [len(start) + p - 1 for p in positions]
        self.targets = [ids[p] for p in positions]

    def forward(self, pixels):
        logits = self.cm.hooks.forward(self.model, pixels, self.full.repeat(len(pixels), 1))
        logp = logits.float().log_softmax(-1)
        return sum(logp[:, r, t] for r, t in zip(self.rows, self.targets))[:, None]


def _peer_grid(name: str, cm, pixels, ids, positions, start) -> np.ndarray:
    score = _WordScore(cm, ids, positions, start)
    if name == "captum-ig":
        from captum.attr import IntegratedGradients

        baseline = cm.pixels(np.zeros(tuple(cm.image_size) + (3,), np.uint8))
        attr = IntegratedGradients(lambda x: score(x)[:, 0]).attribute(
            pixels, baselines=baseline, n_steps=32, internal_batch_size=32)
        return attr.abs().sum(1)[0].detach().numpy()
    from pytorch_grad_cam import GradCAM

    tower = cm.model.encoder
    tower = getattr(tower, "vision_model", tower)
    layer = tower.encoder.layers[-1].layer_norm1
    prefix, (gh, gw) = cm.hooks.grid(cm.model, 1 + (cm.image_size[0] // 8) ** 2)

    def reshape(t):
        return t[:, prefix:].reshape(t.shape[0], gh, gw, t.shape[-1]).permute(0, 3, 1, 2)

    with GradCAM(model=score, target_layers=[layer], reshape_transform=reshape) as cam:
        return cam(input_tensor=pixels, targets=[lambda out: out[0]])[0]


# ----------------------------------------------------------------------------- run

def _word_positions(cm, caption: str):
    """The caption's ids and each whitespace word's token positions, grouped exactly as
    ``ground_caption`` groups them."""
    from groundroll.captioning.api import _caption_ids, _words

    ids, word_ids = _caption_ids(cm, caption)
    words, groups = _words(cm, ids, caption, word_ids)
    assert words == caption.split(), (words, caption)
    return ids, groups


def split_shifts(method: str) -> tuple[str, int]:
    """``"phrase/s2"`` -> ``("phrase", 2)``; a name without ``/s`` -> ``(name, 1)``."""
    name, _, shifts = method.partition("/s")
    return name, int(shifts or 1)


def with_shifts(methods, shifts) -> list[str]:
    """groundroll's methods once per shift count (``METHOD/sK`` for ``K > 1``), then the
    peers."""
    ours = [m if k == 1 else f"{m}/s{k}" for k in shifts for m in methods if m in METHODS]
    return ours + [m for m in methods if m not in METHODS]


def word_maps(method: str, cm, it: dict) -> tuple[np.ndarray, float]:
    """``(heatmaps [W, H, W_img] in [0, 1], seconds)`` of the scene's caption."""
    image, caption = it["image"], it["caption"]
    t0 = time.perf_counter()
    if method == "default":
        res = gr.ground_caption(image, caption, model=cm)
        return res.heatmaps, time.perf_counter() - t0
    name, shifts = split_shifts(method)
    if name in METHODS:
        res = gr.ground_caption(image, caption, model=cm, method=name, refine="none",
                                shifts=shifts)
        return res.heatmaps, time.perf_counter() - t0
    start = cm.hooks.start_ids(cm.model, cm.tokenizer)
    geometry = M.letterbox_geometry(image.shape[:2], cm.image_size, mode="pad")
    pixels = cm.pixels(M.letterbox_image(image, geometry, fill=0))
    ids, groups = _word_positions(cm, caption)
    grids = np.stack([_peer_grid(method, cm, pixels, ids, g, start)
                      for g in groups]).astype(np.float32)
    heat = M.normalize_maps(M.unletterbox(grids, geometry, order=1), how="minmax")
    return np.clip(heat, 0, 1).astype(np.float32), time.perf_counter() - t0


def _distance(it: dict, k: int) -> np.ndarray:
    """Pixel distance to object ``k`` (0 inside), cached on the scene."""
    from scipy.ndimage import distance_transform_edt

    cache = it.setdefault("_distance", {})
    if k not in cache:
        cache[k] = distance_transform_edt(~it["masks"][k])
    return cache[k]


def word_ious(heat: np.ndarray, it: dict, threshold: float) -> list[float]:
    masks = word_masks(heat, it["image"], threshold=threshold)
    out = []
    for w, k in enumerate(it["owners"]):
        if k is not None:
            obj = it["masks"][k]
            out.append(np.logical_and(masks[w], obj).sum()
                       / max(1, np.logical_or(masks[w], obj).sum()))
    return out


def calibrate(cm, items: list[dict], methods) -> dict[str, tuple[float, float]]:
    """Per method, ``(threshold, mean word IoU)`` of the best threshold on ``items``."""
    out = {}
    for method in methods:
        heats = [word_maps(method, cm, it)[0] for it in items]
        scores = {t: float(np.mean([v for h, it in zip(heats, items)
                                    for v in word_ious(h, it, t)])) for t in THRESHOLDS}
        best = max(scores, key=scores.get)
        out[method] = (best, scores[best])
    return out


def evaluate(cm, items: list[dict], methods, thresholds: dict, *, faith: int) -> dict:
    start = cm.hooks.start_ids(cm.model, cm.tokenizer)
    rows: dict[str, dict] = {}
    for method in methods:
        hits, near, raw_hits, ious, corr, dels, seconds = [], [], [], [], [], [], []
        for i, it in enumerate(items):
            raw = None
            if method == "default":
                t0 = time.perf_counter()
                res = gr.ground_caption(it["image"], it["caption"], model=cm)
                heat, masks = res.heatmaps, res.masks
                seconds.append(time.perf_counter() - t0)
            else:
                raw, took = word_maps(method, cm, it)
                heat, masks = refine_word_maps(raw, it["image"], threshold=thresholds[method])
                seconds.append(took)
            colours = []
            for w, k in enumerate(it["owners"]):
                if k is None:
                    continue
                obj = it["masks"][k]
                top = np.unravel_index(int(np.argmax(heat[w])), obj.shape)
                hits.append(bool(obj[top]))
                near.append(bool(_distance(it, k)[top] <= TOLERANCE))
                if raw is not None:
                    raw_hits.append(bool(obj.flat[int(np.argmax(raw[w]))]))
                ious.append(np.logical_and(masks[w], obj).sum()
                            / max(1, np.logical_or(masks[w], obj).sum()))
                if it["caption"].split()[w].strip(",") in shapes.COLORS:
                    colours.append(heat[w].ravel())
            if len(colours) >= 2 and min(colours[0].std(), colours[1].std()) > 0:
                corr.append(float(np.corrcoef(colours[0], colours[1])[0, 1]))
            if i < faith:
                dels += _deletion(cm, it, heat, start)
        rows[method] = {"pointing": float(np.mean(hits)), "pointing_15px": float(np.mean(near)),
                        "pointing_raw": float(np.mean(raw_hits)) if raw_hits else float("nan"),
                        "word_iou": float(np.mean(ious)),
                        "colour_corr": float(np.mean(corr)) if corr else float("nan"),
                        "deletion_auc": float(np.mean(dels)) if dels else float("nan"),
                        "seconds": float(np.median(seconds)), "words": len(hits),
                        "threshold": thresholds.get(method)}
    return rows


def _deletion(cm, it, heat, start) -> list[float]:
    ids, groups = _word_positions(cm, it["caption"])
    out = []
    for w, k in enumerate(it["owners"]):
        if k is None:
            continue
        score = _WordScore(cm, ids, groups[w][:1], start)

        def prob(images):
            with torch.no_grad():
                batch = []
                for im in images:
                    im = np.clip(im, 0, 255).astype(np.uint8)
                    g = M.letterbox_geometry(im.shape[:2], cm.image_size, mode="pad")
                    batch.append(cm.pixels(M.letterbox_image(im, g, fill=0)))
                return score(torch.cat(batch))[:, 0].exp().numpy()

        curve = deletion_curve(prob, it["image"].astype(np.float32), heat[w], steps=10,
                               baseline=0.0)
        out.append(float(curve.auc))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=DEFAULT_CAPTIONER)
    p.add_argument("--n", type=int, default=40, help="held-out scenes per generator")
    p.add_argument("--calib", type=int, default=21,
                   help="calibration scenes (a third per set, training photos, seeds"
                        " disjoint from the held-out ones) for each method's mask threshold")
    p.add_argument("--faith", type=int, default=10, help="scenes with deletion curves")
    p.add_argument("--methods", nargs="*", default=list(METHODS) + list(PEERS))
    p.add_argument("--shifts", nargs="+", type=int, default=[1],
                   help="sub-patch shifts per side to run groundroll's methods with"
                        " (ground_caption's shifts=), each a row of its own")
    p.add_argument("--write-defaults", action="store_true",
                   help="store the best (method, shifts, threshold) on the calibration"
                        " scenes as the bundled model's caption_defaults (meta.json)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cm = resolve_captioner(args.model)
    third = args.calib // 3
    calib = (held_out(args.calib - 2 * third, seed=CALIB_SEED)["shapes"]
             + held_out(third, seed=CALIB_SEED, photos=shapes.TRAIN_PHOTOS)["photo"]
             + held_out(third, seed=CALIB_SEED)["variant"])
    methods = with_shifts(args.methods, args.shifts)
    fitted = calibrate(cm, calib, methods)
    ours = {m: v for m, v in fitted.items() if split_shifts(m)[0] in METHODS}
    if args.write_defaults and ours:
        best = max(ours, key=lambda m: ours[m][1])
        _write_defaults(args.model, best, ours[best][0], args.calib, args.shifts)
        cm = resolve_captioner(gr.zoo.load(args.model))         # with the new defaults
    thresholds = {m: t for m, (t, _) in fitted.items()}
    sets = held_out(args.n)
    table = {name: evaluate(cm, items, ["default"] + methods, thresholds, faith=args.faith)
             for name, items in sets.items()}
    print(f"{args.model}: {args.n} held-out scenes per set, teacher-forced true captions;"
          f" mask thresholds fitted on {args.calib} calibration scenes"
          f" (default call: {cm.defaults or 'library defaults'})")
    print(f"{'set':<8} {'method':<12} {'thresh':>6} {'pointing':>8} {'pt 15px':>8} "
          f"{'pt raw':>8} {'word IoU':>8} {'colour r':>8} {'deletion':>8} {'s/caption':>9}")
    for name, rows in table.items():
        for method, r in rows.items():
            t = "" if r["threshold"] is None else f"{r['threshold']:.2f}"
            print(f"{name:<8} {method:<12} {t:>6} {r['pointing']:8.3f} {r['pointing_15px']:8.3f} "
                  f"{r['pointing_raw']:8.3f} {r['word_iou']:8.3f} "
                  f"{r['colour_corr']:8.3f} {r['deletion_auc']:8.3f} {r['seconds']:9.3f}")
    if args.json:
        args.json.write_text(json.dumps({"calibration": fitted, "held_out": table},
                                        indent=2) + "\n")
    return 0


def _write_defaults(spec: str, method: str, threshold: float, n: int, shift_counts) -> None:
    from groundroll.zoo import BUNDLED_DIR

    if not spec.startswith("bundled:"):
        raise SystemExit("--write-defaults writes a bundled model's meta.json")
    path = BUNDLED_DIR / spec.split(":", 1)[1] / "meta.json"
    meta = json.loads(path.read_text())
    name, shifts = split_shifts(method)
    meta["caption_defaults"] = {
        "method": name, "shifts": shifts, "mask_threshold": threshold,
        "fitted": f"benchmarks/captions.py --calib {n} --shifts"
                  f" {' '.join(map(str, shift_counts))} --write-defaults: best mean word IoU on"
                  " calibration scenes disjoint from the held-out ones"}
    path.write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
