"""Alignment error rate of every method x layer x shift on held-out toy pairs.

Forced decoding on the gold target of ``--n`` held-out toy pairs
(``groundroll.data.toy_translation``, split "test", its conventional seed), the bundled
toy-mt model, argmax extraction (one link per target word) unless told otherwise.
``relevance`` (one backward per target token) runs on the first ``--relevance-n`` pairs;
its ``raw`` baseline column is measured on the same subset. Throughput is sentences per
second of ``align()`` with each method's default settings (forward pass(es), composition,
word aggregation and extraction).

Usage::

    python benchmarks/alignment.py [--n 500] [--relevance-n 500] [--model bundled:toy-mt]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from groundroll.align.api import DEFAULT_SHIFT, align, layer_scan  # noqa: E402
from groundroll.data import toy_translation as toy  # noqa: E402
from groundroll.evaluate import aer  # noqa: E402
from groundroll.zoo import bundled, load  # noqa: E402


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bundled:toy-mt")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--relevance-n", type=int, default=500)
    ap.add_argument("--speed-n", type=int, default=200, help="pairs for the throughput runs")
    ap.add_argument("--extraction", default="argmax")
    ap.add_argument("--symmetrise", default=None)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.model.startswith("bundled:") and args.model.split(":", 1)[1] not in bundled():
        print(f"{args.model} is not available (bundled: {bundled()}); nothing to measure")
        return 0
    bundle = load(args.model)
    pairs = toy.pairs(args.n, split="test")
    n_rel = min(args.relevance_n, args.n)
    common = dict(model=bundle, extraction=args.extraction, symmetrise=args.symmetrise,
                  batch_size=args.batch_size)

    start = time.perf_counter()
    scan = layer_scan(pairs, methods=("raw", "norm", "rollout"), **common)
    rel = layer_scan(pairs[:n_rel], methods=("raw", "relevance"), **common)
    scan_seconds = time.perf_counter() - start

    rows = [r for r in scan.rows]
    rows += [r for r in rel.rows if r["method"] == "relevance"]
    base_full = {(r["layer"], r["shift"]): r for r in scan.rows if r["method"] == "raw"}
    base_rel = {(r["layer"], r["shift"]): r for r in rel.rows if r["method"] == "raw"}
    best = min(rows, key=lambda r: r["aer"])

    print(f"# Alignment on held-out toy pairs ({args.model})\n")
    print(f"Forced decoding on the gold target; extraction {args.extraction}"
          f"{'' if args.symmetrise is None else ' + ' + args.symmetrise}; {args.n} pairs"
          f" ({n_rel} for relevance, whose raw column is on the same {n_rel}). Layer l:"
          " raw/norm = cross-attention of decoder layer l alone ('all' = mean of all"
          " layers); rollout/relevance = composition through decoder layers 0..l. AWO ="
          " the row that predicts the word, AWI = the row where it is the decoder input.\n")
    head = ["method", "layer", "shift", "pairs", "AER", "P", "R", "raw AER (same layer, shift)",
            "Δ vs raw"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        base = (base_rel if r["method"] == "relevance" else base_full).get(
            (r["layer"], r["shift"]))
        cells = [r["method"], str(r["layer"]), "AWI" if r["shift"] else "AWO",
                 str(r["n_pairs"]), _pct(r["aer"]), _pct(r["precision"]), _pct(r["recall"]),
                 "" if base is None else _pct(base["aer"]),
                 "" if base is None or r["method"] == "raw"
                 else f"{100 * (r['aer'] - base['aer']):+.1f}"]
        if r is best:
            cells = [f"**{c}**" if c else c for c in cells]
        print("| " + " | ".join(cells) + " |")

    print("\n## Best setting per method\n")
    print("| method | best layer | shift | AER | best raw AER (same pairs) | beats raw? |")
    print("|---|---|---|---|---|---|")
    for method in ("raw", "norm", "rollout", "relevance"):
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        b = min(mine, key=lambda r: r["aer"])
        raws = (rel if method == "relevance" else scan).rows
        raw_best = min((r for r in raws if r["method"] == "raw"), key=lambda r: r["aer"])
        verdict = "—" if method == "raw" else (
            "yes" if b["aer"] < raw_best["aer"] - 1e-9 else "no")
        print(f"| {method} | {b['layer']} | {'AWI' if b['shift'] else 'AWO'} |"
              f" {_pct(b['aer'])} | {_pct(raw_best['aer'])} | {verdict} |")
    target = "meets" if best["aer"] <= 0.15 else "misses"
    print(f"\nBest overall: {best['method']} layer {best['layer']}"
          f" {'AWI' if best['shift'] else 'AWO'}, AER {_pct(best['aer'])}"
          f" ({target} the 15% target).")

    # Extraction variants at the best setting.
    m, layer, shift = best["method"], best["layer"], best["shift"]
    layers = best["layers"]
    n_var = n_rel if m == "relevance" else args.n
    sub = pairs[:n_var]
    gold = [p.alignment for p in sub]
    print(f"\n## Extraction at the best setting ({m}, layer {layer},"
          f" {'AWI' if shift else 'AWO'}; {n_var} pairs)\n")
    print("| extraction | symmetrise | AER | P | R |")
    print("|---|---|---|---|---|")
    for extraction, sym in (("argmax", None), ("argmax", "intersection"),
                            ("argmax", "grow-diag-final-and"), ("argmax", "union"),
                            ("threshold", None), ("itermax", None)):
        out = align([p.src for p in sub], [p.tgt for p in sub], model=bundle, method=m,
                    layers=layers, shift=shift, extraction=extraction, symmetrise=sym,
                    batch_size=args.batch_size)
        s = aer(gold, None, [a.links for a in out])
        print(f"| {extraction} | {sym or '—'} | {_pct(s.aer)} | {_pct(s.precision)} |"
              f" {_pct(s.recall)} |")

    print(f"\n## Throughput (align() with method defaults, batch {args.batch_size},"
          f" {args.threads} threads)\n")
    print("| method | default shift | pairs | sentences / s |")
    print("|---|---|---|---|")
    align(pairs[0].src, pairs[0].tgt, model=bundle)  # warm-up
    for method in ("raw", "norm", "rollout", "relevance"):
        n_speed = min(args.speed_n, n_rel if method == "relevance" else args.n)
        sub = pairs[:n_speed]
        t0 = time.perf_counter()
        align([p.src for p in sub], [p.tgt for p in sub], model=bundle, method=method,
              batch_size=args.batch_size)
        rate = n_speed / (time.perf_counter() - t0)
        print(f"| {method} | {'AWI' if DEFAULT_SHIFT[method] else 'AWO'} | {n_speed} |"
              f" {rate:.1f} |")
    print(f"\n(layer scans: {scan_seconds:.0f} s; per method: "
          + ", ".join(f"{k} {v:.0f} s" for k, v in {**scan.seconds,
                                                     "relevance": rel.seconds["relevance"]}.items())
          + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
