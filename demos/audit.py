"""Model auditing: where did relevance move between two models?

Two audits with :func:`groundroll.audit`:

1. **segmentation**: the two bundled CLIPs trained by the same recipe, a short run
   (``shapes-clip-short``) and a long one (``shapes-clip``), on the same held-out
   synthetic scenes and prompts (each scene's objects);
2. **alignment**: ``toy-mt`` against a copy fine-tuned for a few steps on a shifted domain
   (sentences of the hard toy pair: polysemous words, idioms, fronted objects), on the
   same held-out base pairs.

Each audit prints its summary (rank correlation, top-region IoU, mass moved, label
agreement or AER between the two models, the examples that changed most) and is saved
with its figure under ``--out-dir``.

Usage::

    python demos/audit.py [--out-dir audit_out] [--scenes 20] [--pairs 100] [--steps 30] [--force]
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

import groundroll as gr
from groundroll.alignment.profile import find_profile
from groundroll.data import shapes
from groundroll.data import toy_translation as toy


def fine_tune(bundle, *, steps: int, variant: str = "hard", lr: float = 3e-4, seed: int = 0):
    """A copy of a toy-mt bundle trained ``steps`` steps (batch 32) on ``variant`` pairs."""
    torch.manual_seed(seed)
    model = copy.deepcopy(bundle.model).float().train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    stream = toy.iter_pairs(seed=seed, split="train", variant=variant)
    tok = bundle.tokenizer
    for _ in range(steps):
        batch = [next(stream) for _ in range(32)]
        enc = tok([p.src for p in batch], text_target=[p.tgt for p in batch], padding=True,
                  return_tensors="pt")
        enc["labels"][enc["labels"] == tok.pad_token_id] = -100
        loss = model(**enc).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    return gr.Bundle(name=f"{bundle.name}+{steps} steps on {variant}", model=model,
                     adapter=bundle.adapter, tokenizer=tok, meta=dict(bundle.meta))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default="audit_out")
    ap.add_argument("--scenes", type=int, default=20, help="held-out scenes")
    ap.add_argument("--pairs", type=int, default=100, help="held-out sentence pairs")
    ap.add_argument("--steps", type=int, default=30, help="fine-tuning steps (batch 32)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--force", action="store_true", help="replace existing outputs")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out_dir)
    for name in ("clips", "toy-mt-finetuned"):
        if (out / name).exists() and not args.force:
            print(f"{out / name} exists; pass --force to replace it", file=sys.stderr)
            return 2

    scenes = [shapes.scene(shapes.EVAL_SEED_OFFSET + k) for k in range(args.scenes)]
    clips = gr.audit("bundled:shapes-clip-short", "bundled:shapes-clip", scenes, progress=True)
    print(clips.to_markdown(), "\n")
    clips.save(out / "clips", force=args.force)

    base = gr.load("bundled:toy-mt")
    tuned = fine_tune(base, steps=args.steps)
    pairs = toy.pairs(args.pairs, split="test")
    # The same settings for both models (the base model's profile), so that only the
    # weights differ.
    profile = find_profile(base)
    options = profile.align_kwargs() if profile is not None else dict(method="raw")
    mt = gr.audit(base, tuned, pairs, options=options, progress=True)
    print(mt.to_markdown())
    mt.save(out / "toy-mt-finetuned", force=args.force)
    print(f"\nwrote {out / 'clips'} and {out / 'toy-mt-finetuned'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
