"""A fixed set of segmentation, alignment, composition and capture outputs, recorded once
and compared bit for bit after a refactor.

Usage (from the repository root)::

    PYTHONPATH=.:tests OMP_NUM_THREADS=1 python benchmarks/fixed_outputs.py record
    PYTHONPATH=.:tests OMP_NUM_THREADS=1 python benchmarks/fixed_outputs.py check

``record`` writes ``benchmarks/results/fixed_outputs.npz``; ``check`` recomputes every
case and exits 1 with one line per array that differs in shape, dtype or any bit. The
cases: ``segment`` on the bundled example scene with every map source that needs no
optional package (default call, profile and refinement off, a second model), CoCa caption
heatmaps, ``align`` on the bundled toy translation model with each method (matrix and
links), ``compose`` with each method on captures of tiny random Marian, CoCa and BLIP, and
the captured attention of tiny random models of several families.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "fixed_outputs.npz"
EXAMPLES = ROOT / "groundroll" / "data" / "examples"


def _np(x) -> np.ndarray:
    if torch.is_tensor(x):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _segmentation(out: dict, name: str, seg) -> None:
    for field in ("labels", "masks", "heatmaps", "scores"):
        out[f"segment/{name}/{field}"] = getattr(seg, field)
    settings = {k: v for k, v in seg.settings.items() if k != "seconds"}
    out[f"segment/{name}/settings"] = np.array(json.dumps(settings, sort_keys=True,
                                                          default=repr))


def segmentation_cases(out: dict) -> None:
    from groundroll.grounding import caption_heatmaps, segment
    from groundroll.zoo import load

    info = json.loads((EXAMPLES / "shapes_scene.json").read_text())
    image = EXAMPLES / info["image"]
    prompts = [f"a {label}" for label in info["labels"]]
    clip = load("bundled:shapes-clip")
    seg = segment(image, prompts, model=clip)
    _segmentation(out, "default", seg)
    for method in ("relevance", "rollout", "maskclip", "sclip", "clearclip", "naclip",
                   "legrad"):
        seg = segment(image, prompts, model=clip, method=method, profile=None,
                      refine="none", mask_threshold=0.5)
        _segmentation(out, method, seg)
    short = load("bundled:shapes-clip-short")
    seg = segment(image, prompts, model=short, method="relevance",
                  templates=short.meta.get("prompt_templates"))
    _segmentation(out, "short", seg)
    words, maps = caption_heatmaps(image, info["caption"])
    out["caption/words"] = np.array(words)
    out["caption/maps"] = _np(maps)


def alignment_cases(out: dict) -> None:
    from groundroll.alignment import align
    from groundroll.zoo import load

    model = load("bundled:toy-mt")
    src = ["Das Haus ist klein", "der Hund sieht die Katze"]
    for method in ("raw", "norm", "rollout", "relevance"):
        result = align(src, model=model, method=method)
        for i, a in enumerate(result if isinstance(result, list) else [result]):
            out[f"align/{method}/{i}/matrix"] = _np(a.matrix)
            out[f"align/{method}/{i}/links"] = np.array(sorted(a.links), dtype=np.int64)
            out[f"align/{method}/{i}/tgt"] = np.array(a.tgt_words)


def composition_and_capture_cases(out: dict) -> None:
    from groundroll.adapters import capture
    from groundroll.compose import compose
    from helpers.tiny_models import build

    chains = {"marian": ("encoder", "decoder"), "open_clip_coca": ("vision", "decoder"),
              "blip": ("vision", "text")}
    for family in ("marian", "open_clip_coca", "blip", "open_clip", "clip", "t5", "bert", "vit"):
        tiny = build(family)
        with capture(tiny.model, grads=True, values=True) as trace:
            output = tiny()
            tiny.score(output).backward()
        for stream in sorted(trace.streams):
            for i, layer in enumerate(trace.stream(stream)):
                out[f"capture/{family}/{stream}/{i}"] = _np(layer.weights)
        if family in chains:
            source, target = chains[family]
            for method in ("raw", "norm", "rollout", "relevance"):
                comp = compose(trace, source=source, target=target, method=method)
                out[f"compose/{family}/{method}/source"] = _np(comp.source_map)


def compute() -> dict[str, np.ndarray]:
    torch.manual_seed(0)
    out: dict[str, np.ndarray] = {}
    segmentation_cases(out)
    alignment_cases(out)
    composition_and_capture_cases(out)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("record", "check"))
    parser.add_argument("--file", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    out = compute()
    if args.mode == "record":
        args.file.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.file, **out)
        print(f"recorded {len(out)} arrays in {args.file}")
        return 0
    with np.load(args.file) as saved:
        expected = {k: saved[k] for k in saved.files}
    problems = [f"missing now: {k}" for k in sorted(set(expected) - set(out))]
    problems += [f"new: {k}" for k in sorted(set(out) - set(expected))]
    for key in sorted(set(out) & set(expected)):
        a, b = out[key], expected[key]
        if a.shape != b.shape or a.dtype != b.dtype:
            problems.append(f"{key}: {a.dtype}{a.shape} against {b.dtype}{b.shape}")
        elif a.tobytes() != b.tobytes():
            problems.append(f"{key}: values differ (max |diff| "
                            f"{np.abs(a.astype(float) - b.astype(float)).max():.3g})"
                            if a.dtype.kind in "fiu" else f"{key}: values differ")
    for line in problems:
        print(line, file=sys.stderr)
    print(f"{len(out) - len(problems)} of {len(out)} arrays bit-identical")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
