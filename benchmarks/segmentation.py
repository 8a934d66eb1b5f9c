"""Text-prompted segmentation on held-out synthetic scenes: every map source on the
bundled CLIPs, with localisation, mask quality, faithfulness and speed.

    python benchmarks/segmentation.py --n 100 --calib 40          # table
    python benchmarks/segmentation.py --n 100 --calib 40 --write-profiles

Protocol
--------
* Held-out scenes from two generators: ``shapes`` (``groundroll.data.shapes`` at seeds
  ``>= EVAL_SEED_OFFSET``, 128 x 160, 1-4 objects on flat, gradient or noise) and
  ``variant`` (:func:`variant_scene`: sizes 96-256 px per side, 1-5 objects of radius
  0.08-0.30, backgrounds of stripes, checkers, smooth colour noise or dark/bright
  grain, objects with brightness jitter and grain). The variant generator is not what
  the models were trained on; it checks that settings carry to other scene styles. A
  third held-out set, ``photo`` (:func:`photo_scene`), puts the shapes generator's
  objects on crops of photographs no recipe trains on (``shapes.EVAL_PHOTOS``, 96-256
  px a side); calibration never sees it.
* Prompts: the labels present in each scene, as a user would type them
  (``"red circle"``). Score: mean object IoU (each object's mask against the mask of
  its prompt; background is label 0).
* Calibrated mIoU: the background rule, threshold and refinement of each source are
  fitted (:func:`groundroll.grounding.calibrate.fit_postprocess`) on ``--calib``
  scenes, half from each generator, drawn from seeds disjoint from the held-out
  ones; never on the held-out scenes. ``--write-profiles`` stores these fits as the
  bundled ``profiles.json`` (default method: the best fit on the calibration scenes).
* Default call: ``segment(image, prompts, model=M, method=X)`` with nothing else, i.e.
  the bundled profile (checked against real ``segment`` calls).
* ROC-AUC (object pixels against background pixels, per object), pointing game (the
  map's maximum falls inside the object), both on the source's map at image pixels.
* Deletion / insertion AUC (:mod:`groundroll.evaluate`, 10 steps, black / blurred
  baseline) of the softmax probability of the object's prompt among the scene's
  prompts, on the first ``--faith`` held-out ``shapes`` scenes.
* Seconds per image: the map source on one thread (``OMP_NUM_THREADS=1``).
* ``--long-side 1024``: the held-out scenes resized to a long side of 1024 px (image
  bicubic, masks nearest) before anything runs, for default calls on large images.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from groundroll.data import shapes
from groundroll.evaluate import deletion_curve, insertion_curve
from groundroll.grounding import channel_maps, resolve_model, segment
from groundroll.grounding.calibrate import (default_source, fit_postprocess,
                                            object_ious, score_entry)
from groundroll.grounding.profiles import (Profile, model_fingerprint,
                                           resolve_profile)
from groundroll.grounding.registry import SOURCES

METHODS = ("relevance", "legrad", "rollout", "maskclip", "naclip", "gradcam", "ig",
           "saliency", "ensemble")
REFINES = ("none", "slic", "superpixels")
VARIANT_SEED = 7_000_000


# ----------------------------------------------------------------------------- scenes


#: The kinds of background :func:`variant_scene` draws, by its ``kind`` index.
VARIANT_BACKGROUNDS = ("stripes", "checker", "smooth noise", "grain")


def variant_scene(seed: int) -> dict:
    """A scene in another style than the training generator (see the module notes):
    ``{"image", "masks", "labels", "background"}`` (the background's kind, one of
    :data:`VARIANT_BACKGROUNDS`)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(VARIANT_SEED + seed)
    H, W = int(rng.integers(96, 257)), int(rng.integers(96, 257))
    s = shapes.scene(rng, size=(H, W), n_objects=int(rng.integers(1, 6)),
                     radius=(0.08, 0.3), background="flat", max_overlap=0.3)
    img = s.image.astype(np.float64)
    bg = s.label_map == 0
    yy, xx = np.mgrid[0:H, 0:W]
    base = rng.uniform(60, 200, size=3)
    kind = int(rng.integers(4))
    if kind == 0:                                                # stripes
        period, angle = rng.uniform(6, 30), rng.uniform(0, np.pi)
        on = np.sin((np.cos(angle) * xx + np.sin(angle) * yy) * 2 * np.pi / period) > 0
        texture = np.where(on[..., None], base, rng.uniform(60, 200, size=3))
    elif kind == 1:                                              # checker
        cell = int(rng.integers(8, 33))
        on = (yy // cell + xx // cell) % 2 == 0
        texture = np.where(on[..., None], base,
                           np.clip(base + rng.uniform(-50, 50, size=3), 0, 255))
    elif kind == 2:                                              # smooth colour noise
        noise = gaussian_filter(rng.normal(0, 1, size=(H, W, 3)),
                                sigma=(rng.uniform(3, 12),) * 2 + (0,))
        texture = base + noise / (noise.std() + 1e-6) * 35
    else:                                                        # dark or bright grain
        texture = (np.broadcast_to(rng.choice([25.0, 235.0]) + rng.uniform(-10, 10, 3),
                                   (H, W, 3)) + rng.normal(0, 8, (H, W, 1)))
    img[bg] = texture[bg]
    fg = ~bg
    img[fg] = img[fg] * rng.uniform(0.85, 1.1) + rng.normal(0, 8, size=(fg.sum(), 1))
    return {"image": np.clip(np.round(img), 0, 255).astype(np.uint8), "masks": s.masks,
            "labels": list(s.labels), "background": VARIANT_BACKGROUNDS[kind]}


PHOTO_SEED = 3_000_000


def photo_scene(seed: int, photos=shapes.EVAL_PHOTOS) -> dict:
    """Objects of the shapes generator on a random crop of one of ``photos`` (by default
    ``shapes.EVAL_PHOTOS``, which no training recipe crops), 96-256 px a side."""
    rng = np.random.default_rng(PHOTO_SEED + seed)
    size = (int(rng.integers(96, 257)), int(rng.integers(96, 257)))
    s = shapes.scene(rng, size=size, background="photo", photos=photos)
    return {"image": s.image, "masks": s.masks, "labels": list(s.labels)}


def upscaled(item: dict, long_side: int) -> dict:
    """``item`` resized so its long side is ``long_side`` (image bicubic, masks nearest)."""
    from PIL import Image

    H, W = item["image"].shape[:2]
    f = long_side / max(H, W)
    size = (max(1, round(W * f)), max(1, round(H * f)))
    image = np.asarray(Image.fromarray(item["image"]).resize(size, Image.BICUBIC))
    masks = np.stack([np.asarray(Image.fromarray(m).resize(size, Image.NEAREST))
                      for m in item["masks"]])
    return {"image": image, "masks": masks, "labels": item["labels"]}


def scene_sets(n: int, calib: int, long_side: int | None = None) -> tuple[dict, list]:
    held = {"shapes": [{"image": s.image, "masks": s.masks, "labels": list(s.labels)}
                       for s in shapes.scenes(n, seed=shapes.EVAL_SEED_OFFSET)],
            "variant": [variant_scene(i) for i in range(n)],
            "photo": [photo_scene(i) for i in range(n)]}
    if long_side:
        held = {g: [upscaled(it, long_side) for it in items] for g, items in held.items()}
    half = calib // 2
    cal = [{"image": s.image, "masks": s.masks, "labels": list(s.labels)}
           for s in shapes.scenes(calib - half, seed=shapes.TRAIN_SEED_OFFSET + 123_456)]
    cal += [variant_scene(500_000 + i) for i in range(half)]
    return held, cal


# ----------------------------------------------------------------------------- metrics


def roc_auc(score: np.ndarray, positive: np.ndarray, negative: np.ndarray) -> float:
    """Probability that a positive pixel scores above a negative one (ties half)."""
    from scipy.stats import rankdata

    pos, neg = score[positive], score[negative]
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2)
                 / (pos.size * neg.size))


def localisation(maps: list[np.ndarray], items: list[dict]) -> tuple[float, float]:
    aucs, hits = [], []
    for m, it in zip(maps, items):
        background = ~it["masks"].any(0)
        for k, mask in enumerate(it["masks"]):
            aucs.append(roc_auc(m[k], mask, background))
            hits.append(bool(mask.flat[int(np.argmax(m[k]))]))
    return float(np.nanmean(aucs)), float(np.mean(hits))


def faithfulness(handle, templates, maps, items) -> tuple[float, float]:
    """Mean deletion and insertion AUC over objects (softmax among the scene's prompts)."""
    import torch

    from groundroll import masks as M

    dels, ins = [], []
    for m, it in zip(maps, items):
        if len(it["labels"]) < 2:
            continue
        text = handle.text_embeddings(it["labels"], templates)
        geometry = M.letterbox_geometry(it["image"].shape[:2], handle.image_size)
        for k in range(len(it["labels"])):
            def score_fn(batch, k=k):
                images = [M.letterbox_image(np.clip(b, 0, 255).astype(np.uint8), geometry)
                          for b in batch]
                with torch.no_grad():
                    emb = handle.image_embeddings(handle.pixels(images))
                    logits = handle.logit_scale() * emb @ text.T
                return logits.softmax(-1)[:, k].cpu().numpy()
            image = it["image"].astype(np.float32)
            dels.append(deletion_curve(score_fn, image, m[k], steps=10, baseline=0.0).auc)
            ins.append(insertion_curve(score_fn, image, m[k], steps=10).auc)
    return float(np.mean(dels)), float(np.mean(ins))


# ----------------------------------------------------------------------------- main


def _templates(spec: str):
    from groundroll.zoo import BUNDLED_DIR

    meta = Path(BUNDLED_DIR) / spec.split(":", 1)[1] / "meta.json"
    return json.loads(meta.read_text()).get("prompt_templates") if meta.is_file() else None


def _maps(handle, method, items, templates, options):
    out, start = [], time.perf_counter()
    for it in items:
        out.append(channel_maps(handle, it["image"], it["labels"], method=method,
                                templates=templates, source_options=options))
    return out, (time.perf_counter() - start) / max(len(items), 1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100, help="held-out scenes per generator")
    p.add_argument("--calib", type=int, default=40, help="calibration scenes (both generators)")
    p.add_argument("--faith", type=int, default=20, help="scenes for deletion/insertion")
    p.add_argument("--ig-n", type=int, default=None,
                   help="held-out scenes per generator, and calibration scenes, for ig"
                        " (slow; default --n and --calib)")
    p.add_argument("--clip", nargs="+",
                   default=["bundled:shapes-clip", "bundled:shapes-clip-short"])
    p.add_argument("--methods", nargs="*", default=list(METHODS))
    p.add_argument("--write-profiles", action="store_true",
                   help="write each bundled model's profiles.json from the calibration fits")
    p.add_argument("--use-profiles", action="store_true",
                   help="skip the fitting: take the calibrated settings from the bundled"
                        " profiles.json that a --write-profiles run stored")
    p.add_argument("--long-side", type=int, default=None,
                   help="score the held-out scenes resized to this long side (e.g. 1024:"
                        " default calls on large images); calibration scenes stay as drawn")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    held, cal = scene_sets(args.n, args.calib, args.long_side)
    results = []
    for spec in args.clip:
        handle = resolve_model(spec)
        templates = _templates(spec)
        fitted, calib_scores, cal_seconds = {}, {}, {}
        partitions: dict = {}     # each scene partitioned once for every source
        per_method = {}
        stored = resolve_profile(None, handle) if args.use_profiles else None
        if args.use_profiles and stored is None:
            raise SystemExit(f"--use-profiles: {spec} has no bundled profiles.json")
        for method in args.methods:
            src = SOURCES[method]
            normalize, scale = src.normalize, src.logit_scale(handle)
            options = {"n_steps": 16} if method == "ig" else {}
            if stored is not None:       # the fits a --write-profiles run stored
                fitted[method] = stored.settings(method)
                calib_scores[method] = stored.calibration["mean_object_iou"][method]
                per_method[method] = (normalize, scale, fitted[method]["source_options"])
                continue
            fit_on = (cal[:: max(1, len(cal) // args.ig_n)][: args.ig_n]
                      if method == "ig" and args.ig_n else cal)
            cal_maps, cal_seconds[method] = _maps(handle, method, fit_on, templates, options)
            score, entry = fit_postprocess(cal_maps, fit_on,
                                           images=[c["image"] for c in fit_on],
                                           normalize=normalize, logit_scale=scale,
                                           refine=REFINES, cache=partitions)
            fitted[method] = {**entry, "normalize": normalize, "logit_scale": float(scale),
                              "templates": templates, "source_options": options}
            calib_scores[method] = round(score, 4)
            per_method[method] = (normalize, scale, options)
            print(f"{spec} {method}: calibration {score:.3f} {entry}", file=sys.stderr,
                  flush=True)
        if args.write_profiles and stored is None:
            from groundroll.zoo import BUNDLED_DIR

            default = default_source(calib_scores, cal_seconds)
            profile = Profile(model=spec, fingerprint=model_fingerprint(handle),
                              default_method=default, methods=fitted, calibration={
                                  "scenes": len(cal), "objects": sum(len(c["labels"])
                                                                     for c in cal),
                                  "generators": "shapes (training seeds) + variant",
                                  "mean_object_iou": calib_scores,
                                  "metric": "mean object IoU",
                                  "default_rule": "the fastest source within 0.02"
                                                  " calibration IoU of the best",
                                  "command": "python benchmarks/segmentation.py "
                                             + " ".join(argv or sys.argv[1:])})
            path = Path(BUNDLED_DIR) / spec.split(":", 1)[1] / "profiles.json"
            profile.save(path, force=True)
            print(f"wrote {path} (default method {default})", file=sys.stderr)
        shipped = resolve_profile(None, handle)
        for method in args.methods:
            normalize, scale, options = per_method[method]
            row = {"model": spec, "method": method, "calibrated": fitted[method]}
            seconds = []
            for gen, items in held.items():
                if method == "ig" and args.ig_n:
                    items = items[: args.ig_n]
                maps, sec = _maps(handle, method, items, templates, options)
                seconds.append(sec)
                images = [it["image"] for it in items]
                row[f"calibrated_miou_{gen}"] = score_entry(
                    maps, items, images=images, entry=fitted[method], normalize=normalize,
                    logit_scale=scale, cache=partitions)
                entry = shipped.settings(method) if shipped is not None else {}
                if entry:
                    row[f"default_miou_{gen}"] = score_entry(
                        maps, items, images=images, entry=entry,
                        normalize=entry.get("normalize", normalize),
                        logit_scale=entry.get("logit_scale", scale), cache=partitions)
                    if gen == "shapes":
                        _check_default(handle, spec, method, items[0], maps[0], entry)
                else:
                    row[f"default_miou_{gen}"] = score_entry(
                        maps, items, images=images, entry={"background_rule": "none"},
                        normalize=normalize, logit_scale=scale)
                row[f"roc_auc_{gen}"], row[f"pointing_{gen}"] = localisation(maps, items)
                row[f"n_{gen}"] = len(items)
                row[f"objects_{gen}"] = sum(len(it["labels"]) for it in items)
                if gen == "shapes" and args.faith:
                    row["deletion_auc"], row["insertion_auc"] = faithfulness(
                        handle, templates, maps[: args.faith], items[: args.faith])
            row["seconds_per_image"] = float(np.mean(seconds))
            results.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)

    print(f"\nHeld-out scenes per generator: n={args.n} (ig: {args.ig_n or args.n}"
          f"{f'; resized to a long side of {args.long_side}' if args.long_side else ''});"
          f" calibration: {args.calib} other scenes; faithfulness: first {args.faith}"
          f" shapes scenes with >= 2 objects; {args.threads} thread(s).\n")
    sets = list(held)
    names = " / ".join(sets)

    def per_set(r, key, fmt):
        return " / ".join(format(r[f"{key}_{g}"], fmt) for g in sets)

    print(f"| model | method | ROC-AUC | pointing | calibrated mIoU {names} |"
          f" default-call mIoU {names} | deletion AUC (lower better) |"
          " insertion AUC | s / image |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['model'].split(':')[-1]} | {r['method']} | {per_set(r, 'roc_auc', '.3f')}"
              f" | {per_set(r, 'pointing', '.2f')} | {per_set(r, 'calibrated_miou', '.3f')} |"
              f" {per_set(r, 'default_miou', '.3f')} |"
              f" {r.get('deletion_auc', float('nan')):.3f} |"
              f" {r.get('insertion_auc', float('nan')):.3f} | {r['seconds_per_image']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _check_default(handle, spec, method, item, maps, entry) -> None:
    """The cached-maps shortcut must give what a default segment() call gives."""
    from groundroll.grounding.calibrate import score_entry as _score

    seg = segment(item["image"], item["labels"], model=handle, method=method)
    want = object_ious(seg.labels, item["masks"])
    got = _score([maps], [item], images=[item["image"]], entry=entry,
                 normalize=entry.get("normalize", "minmax"),
                 logit_scale=entry.get("logit_scale", 10.0))
    if abs(float(np.mean(want)) - got) > 1e-6:
        raise AssertionError(f"{spec}/{method}: benchmark IoU {got:.4f} differs from a"
                             f" default segment() call {np.mean(want):.4f}")


if __name__ == "__main__":
    sys.exit(main())
