"""Held-out caption quality of a shapes captioner directory.

    python training/eval_captioner.py groundroll/zoo/bundled/shapes-captioner [--n 300]
    python training/eval_captioner.py groundroll/zoo/bundled/shapes-captioner --by-photo 40

Loads the directory through ``groundroll.zoo.hf.load_hf``, captions ``n`` held-out scenes
of each background (flat, gradient, noise; 1-4 objects, 128 x 160, scene seeds from
10**6, which training never draws) greedily, and reports per background and overall:

- object_precision / object_recall: (colour, shape) objects of the generated caption
  against the scene's objects (multisets);
- content_word_accuracy: the caption's colour and shape words, position by position,
  against the reference caption's (objects left to right), over the longer of the two;
- content_word_recall_any_order: the same words as multisets, order ignored (an object
  named in the wrong place still counts), over the longer of the two;
- exact_match: the generated caption equals the reference;
- colour_map_correlation: for captions with two or more colour words, the Pearson
  correlation between the last decoder layer's cross-attention maps (head mean, over the
  144 patch tokens) of two colour words, at the row that predicts each word; the mean over
  pairs, then over captions.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _shapes_common as common  # noqa: E402
from groundroll.data import shapes  # noqa: E402

CONTENT = frozenset(shapes.COLORS) | frozenset(shapes.SHAPES)


def caption(bundle, images: list[np.ndarray], *, batch_size: int = 50) -> list[str]:
    """Greedy captions of uint8 ``[H, W, 3]`` images."""
    import torch
    from PIL import Image

    out = []
    for i in range(0, len(images), batch_size):
        pixels = torch.stack([bundle.preprocess(Image.fromarray(im))
                              for im in images[i:i + batch_size]])
        with torch.no_grad():
            ids = bundle.model.generate(pixel_values=pixels, do_sample=False, num_beams=1)
        out += bundle.tokenizer.batch_decode(ids, skip_special_tokens=True)
    return out


def objects(text: str) -> list[tuple[str, str]]:
    """(colour, shape) pairs named in a caption: each colour word followed by a shape."""
    words = text.replace(",", " ").split()
    return [(c, s) for c, s in zip(words, words[1:])
            if c in shapes.COLORS and s in shapes.SHAPES]


def content_words(text: str) -> list[str]:
    return [w for w in text.replace(",", " ").split() if w in CONTENT]


def _overlap(a: list, b: list) -> int:
    from collections import Counter

    return sum((Counter(a) & Counter(b)).values())


def scores(generated: list[str], references: list[str]) -> dict:
    """Object precision and recall, content-word accuracy and exact match."""
    found = named = true = right = anywhere = positions = 0
    for gen, ref in zip(generated, references):
        g, r = objects(gen), objects(ref)
        found += _overlap(g, r)
        named += len(g)
        true += len(r)
        gw, rw = content_words(gen), content_words(ref)
        right += sum(a == b for a, b in zip(gw, rw))
        anywhere += _overlap(gw, rw)
        positions += max(len(gw), len(rw))
    exact = np.mean([g == r for g, r in zip(generated, references)])
    return {"object_precision": round(found / max(named, 1), 4),
            "object_recall": round(found / max(true, 1), 4),
            "content_word_accuracy": round(right / max(positions, 1), 4),
            "content_word_recall_any_order": round(anywhere / max(positions, 1), 4),
            "exact_match": round(float(exact), 4)}


def colour_map_correlation(bundle, images: list[np.ndarray], captions: list[str]) -> dict:
    """Mean Pearson correlation of two colour words' last-layer cross-attention maps
    (head mean, patch tokens) in the same caption, teacher-forced on ``captions``."""
    import torch
    from PIL import Image

    tok, model = bundle.tokenizer, bundle.model
    colour_ids = {tok.convert_tokens_to_ids(c) for c in shapes.COLORS}
    per_caption = []
    for image, text in zip(images, captions):
        ids = [tok.bos_token_id, *tok(text, add_special_tokens=False)["input_ids"]]
        # Row t of the decoder predicts token t + 1.
        rows = [t - 1 for t in range(1, len(ids)) if ids[t] in colour_ids]
        if len(rows) < 2:
            continue
        pixels = bundle.preprocess(Image.fromarray(image))[None]
        with torch.no_grad():
            out = model(pixel_values=pixels, decoder_input_ids=torch.tensor([ids]),
                        output_attentions=True)
        maps = out.cross_attentions[-1][0].mean(0)[:, 1:]  # [query, patch]
        pairs = [np.corrcoef(maps[a].numpy(), maps[b].numpy())[0, 1]
                 for a, b in itertools.combinations(rows, 2)]
        per_caption.append(float(np.mean(pairs)))
    return {"colour_map_correlation": round(float(np.mean(per_caption)), 4)
            if per_caption else None, "captions_with_two_colours": len(per_caption)}


def _variant_scenes(n: int) -> list[shapes.Scene]:
    """``n`` scenes of ``benchmarks/segmentation.py``'s variant generator (stripes,
    checkers, smooth colour noise, grain; other sizes and counts), as ``Scene``s."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from segmentation import variant_scene

    out = []
    for i in range(n):
        item = variant_scene(i)
        out.append(shapes.Scene(image=item["image"], masks=item["masks"],
                                labels=item["labels"],
                                caption=shapes.caption_for(item["labels"]),
                                label_map=np.zeros(item["image"].shape[:2], np.int64)))
    return out


#: Held-out sets scored per column: the training generator's three backgrounds, its
#: ``photo`` background over ``shapes.EVAL_PHOTOS`` (photos training never crops), and
#: the variant generator, which no training recipe draws from.
SETS = (*shapes.BACKGROUNDS, "photo", "variant")


def held_out_scenes(name: str, n: int, seed: int) -> list[shapes.Scene]:
    if name == "variant":
        return _variant_scenes(n)
    return list(shapes.scenes(n, seed=seed, background=name, photos=shapes.EVAL_PHOTOS))


def evaluate(bundle, *, n: int = 300, seed: int = shapes.EVAL_SEED_OFFSET,
             sets: tuple[str, ...] = SETS) -> dict:
    """Scores on ``n`` held-out scenes of each set, and over all of them."""
    from shapes_captioner import target_caption

    result, every_gen, every_ref = {}, [], []
    for name in sets:
        first = seed + SETS.index(name) * n
        scenes = held_out_scenes(name, n, first)
        images = [s.image for s in scenes]
        refs = [target_caption(s) for s in scenes]
        gen = caption(bundle, images)
        result[name] = {**scores(gen, refs),
                        **colour_map_correlation(bundle, images, gen), "n": n}
        if name != "variant":
            result[name]["scene_seeds"] = [first, first + n - 1]
        every_gen += gen
        every_ref += refs
    result["all"] = {**scores(every_gen, every_ref), "n": len(every_gen)}
    return result


#: Scene seeds of the per-photo breakdown (apart from ``evaluate``'s).
BY_PHOTO_SEED = 3 * 10**6


def by_photo(bundle, *, n: int = 40, seed: int = BY_PHOTO_SEED) -> dict:
    """Scores on ``n`` held-out scenes over each photo of ``shapes.EVAL_PHOTOS`` alone,
    with the content words the captions add and miss most (which photo the ``photo``
    set loses on, and how)."""
    import collections

    from shapes_captioner import target_caption

    out = {}
    for name in shapes.EVAL_PHOTOS:
        scenes = list(shapes.scenes(n, seed=seed, background="photo", photos=[name]))
        refs = [target_caption(s) for s in scenes]
        gen = caption(bundle, [s.image for s in scenes])
        added, missed = collections.Counter(), collections.Counter()
        for g, r in zip(gen, refs):
            want, got = collections.Counter(content_words(r)), collections.Counter(
                content_words(g))
            added.update(got - want)
            missed.update(want - got)
        out[name] = {**scores(gen, refs), "n": n, "added": dict(added.most_common(3)),
                     "missed": dict(missed.most_common(3))}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir", type=Path)
    p.add_argument("--n", type=int, default=300, help="held-out scenes per background")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    p.add_argument("--update-meta", action="store_true",
                   help="write the result into the directory's meta.json as held_out")
    p.add_argument("--seed", type=int, default=shapes.EVAL_SEED_OFFSET,
                   help="first held-out scene seed (another range for choosing between runs)")
    p.add_argument("--by-photo", type=int, default=0, metavar="N",
                   help="only score N scenes over each held-out photo alone")
    args = p.parse_args(argv)

    import torch

    from groundroll.zoo.hf import load_hf

    torch.set_num_threads(args.threads)
    if args.by_photo:
        result = by_photo(load_hf(args.model_dir), n=args.by_photo)
        for name, row in result.items():
            print(f"{name:28s} content words {row['content_word_recall_any_order']:.3f}"
                  f"  precision {row['object_precision']:.3f}"
                  f"  recall {row['object_recall']:.3f}  added {row['added']}"
                  f"  missed {row['missed']}")
        return result
    if args.seed < shapes.EVAL_SEED_OFFSET:
        p.error(f"--seed {args.seed} is a training seed; held-out scenes start at"
                f" {shapes.EVAL_SEED_OFFSET}")
    result = evaluate(load_hf(args.model_dir), n=args.n, sets=tuple(args.sets),
                      seed=args.seed)
    result["command"] = (f"python training/eval_captioner.py {args.model_dir} --n {args.n}"
                         + ("" if tuple(args.sets) == SETS else
                            " --sets " + " ".join(args.sets))
                         + ("" if args.seed == shapes.EVAL_SEED_OFFSET else
                            f" --seed {args.seed}"))
    print(json.dumps(result, indent=2))
    if args.update_meta:
        common.record_held_out(args.model_dir, result)
    return result


if __name__ == "__main__":
    main()
