"""Link extraction on one layer's attention: argmax, symmetrisations, IterMax and
``mutual`` at several cut-offs, from the forward matrix alone and with a reverse model.

    OMP_NUM_THREADS=1 python benchmarks/alignment_extraction.py             # hard pair, dev
    python benchmarks/alignment_extraction.py --variant base --split test

Prints AER in percent of every setting on ``--n`` gold pairs, reading raw
cross-attention of decoder layer ``--layer`` (both models). The model cards'
"what got it there" figures come from this table.
"""

from __future__ import annotations

import argparse
import sys

import torch

import groundroll as gr
from groundroll.alignment.extract import extract_links
from groundroll.data import toy_translation as toy
from groundroll.evaluate import aer

MODELS = {"base": ("bundled:toy-mt", None),
          "hard": ("bundled:toy-mt-hard", "bundled:toy-mt-hard-reverse")}
CUTOFFS = (0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="hard", choices=tuple(MODELS))
    ap.add_argument("--split", default="dev", choices=("dev", "test"))
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--layer", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    forward_spec, reverse_spec = MODELS[args.variant]
    pairs = toy.pairs(args.n, split=args.split, variant=args.variant)
    src, tgt = [p.src for p in pairs], [p.tgt for p in pairs]
    gold = [p.alignment for p in pairs]
    read = dict(profile=False, method="raw", layers=[args.layer], batch_size=32)
    forward = [a.matrix for a in gr.align(src, tgt, model=forward_spec, **read)]
    backwards = {"columns of the forward matrix": [None] * len(pairs)}
    if reverse_spec is not None:
        reverse = gr.align(tgt, src, model=reverse_spec, **read)
        backwards[reverse_spec] = [a.matrix.T for a in reverse]
        links = [{(s, t) for t, s in a.links} for a in reverse]
        print(f"reverse model alone, argmax: AER {100 * aer(gold, None, links).aer:.1f}")

    def score(**kw):
        return 100 * aer(gold, None, [extract_links(m, backward=b, **kw)
                                      for m, b in zip(forward, backward)]).aer

    print(f"\n{args.variant} pair, {args.n} {args.split} pairs, raw layer {args.layer}; AER %\n")
    print("| backward direction | argmax (forward only) | intersection | grow-diag-final-and"
          " | itermax | " + " | ".join(f"mutual {c}" for c in CUTOFFS) + " |")
    print("|---" * (5 + len(CUTOFFS)) + "|")
    for name, backward in backwards.items():
        row = [score(), score(symmetrize="intersection"),
               score(symmetrize="grow-diag-final-and"), score(extraction="itermax")]
        row += [score(extraction="mutual", link_threshold=c) for c in CUTOFFS]
        print(f"| {name} | " + " | ".join(f"{x:.1f}" for x in row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
