"""Word alignment on the bundled toy translation model.

Aligns a few held-out toy sentence pairs (forced decoding on the reference target and
on the model's own translation), prints Pharaoh links and AER against the gold
alignment, and saves a matrix plot (PNG) and an HTML view of the first pair.

Usage::

    python demos/align_toy.py [--out-dir align_toy_out] [--n 5] [--method raw] [--force]
    python demos/align_toy.py --variant hard          # the hard pair, bundled:toy-mt-hard

Without ``--method`` the default call is used: the settings of the model's alignment
profile (``align_profile.json`` beside the model).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from groundroll._atomic import atomic_write, check_writable
from groundroll.alignment import align
from groundroll.data import toy_translation as toy
from groundroll.evaluate import aer
from groundroll.zoo import load


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="base", choices=list(toy.VARIANTS))
    ap.add_argument("--model", default=None,
                    help="default: bundled:toy-mt, or bundled:toy-mt-hard for --variant hard")
    ap.add_argument("--n", type=int, default=5, help="held-out pairs to align")
    ap.add_argument("--method", default=None,
                    choices=("raw", "norm", "rollout", "relevance", "decoder-rollout",
                             "peak-weighted"),
                    help="default: the model's profile")
    ap.add_argument("--out-dir", default="align_toy_out")
    ap.add_argument("--force", action="store_true", help="overwrite existing outputs")
    args = ap.parse_args(argv)

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png, html = out_dir / "alignment.png", out_dir / "alignment.html"
    check_writable([png, html], force=args.force)

    bundle = load(args.model or ("bundled:toy-mt" if args.variant == "base"
                                 else "bundled:toy-mt-hard"))
    pairs = toy.pairs(args.n, split="test", variant=args.variant)
    forced = align([p.src for p in pairs], [p.tgt for p in pairs], model=bundle,
                   method=args.method)
    translated = align([p.src for p in pairs], model=bundle, method=args.method)
    for p, a, t in zip(pairs, forced, translated):
        print(f"source      {p.src}")
        print(f"target      {p.tgt}")
        print(f"  gold      {' '.join(f'{s}-{j}' for s, j in sorted(p.alignment))}")
        print(f"  predicted {a.pharaoh()}")
        print(f"translation {' '.join(t.tgt_words)}")
        print(f"  predicted {t.pharaoh()}\n")
    score = aer([p.alignment for p in pairs], None, [a.links for a in forced])
    st = forced[0].settings
    print(f"{st['method']} layers {st['layers']} ({'AWI' if st['shift'] else 'AWO'};"
          f" {st['defaults']}), forced on the"
          f" reference: AER {100 * score.aer:.1f}  precision {100 * score.precision:.1f}"
          f"  recall {100 * score.recall:.1f} on {len(pairs)} held-out pairs")

    first = forced[0]
    fig = first.plot(gold=set(pairs[0].alignment))
    with atomic_write(png, force=args.force) as handle:
        fig.savefig(handle, format="png", dpi=120)
    with atomic_write(html, force=args.force, mode="w") as handle:
        handle.write("<!doctype html><meta charset='utf-8'><title>toy-mt alignment</title>\n")
        handle.write(first.to_html() + "\n")
    print(f"wrote {png} and {html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
