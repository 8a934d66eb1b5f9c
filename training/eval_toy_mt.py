"""Held-out exact match and BLEU of a toy-mt model.

Usage::

    python training/eval_toy_mt.py                       # the bundled toy-mt
    python training/eval_toy_mt.py --model hf:/path/to/folder --n 1000
    python training/eval_toy_mt.py --model bundled:toy-mt-hard      # the hard pair
    python training/eval_toy_mt.py --model bundled:toy-mt --fit-profile --force

The language pair follows the model's ``meta.json`` (``variant``) unless ``--variant``
says otherwise. ``--fit-profile`` writes the model's alignment profile
(``align_profile.json``, read by ``groundroll.align``) from gold-aligned dev pairs.

Greedy ``generate`` on held-out test pairs of the toy language pair. BLEU is corpus
BLEU-4 on whitespace tokens (sacrebleu's when it is installed, else the same formula
computed here: uniform n-gram weights, brevity penalty, no smoothing).
"""

from __future__ import annotations

import argparse
import math
from collections import Counter

import torch

from groundroll.data import toy_translation as toy
from groundroll.zoo import load


def corpus_bleu(hypotheses: list[str], references: list[str], max_n: int = 4) -> float:
    """Corpus BLEU in [0, 100] with one reference per sentence, whitespace tokens."""
    matches, totals = [0] * max_n, [0] * max_n
    hyp_len = ref_len = 0
    for hyp, ref in zip(hypotheses, references):
        h, r = hyp.split(), ref.split()
        hyp_len, ref_len = hyp_len + len(h), ref_len + len(r)
        for n in range(1, max_n + 1):
            h_grams = Counter(tuple(h[k : k + n]) for k in range(len(h) - n + 1))
            r_grams = Counter(tuple(r[k : k + n]) for k in range(len(r) - n + 1))
            matches[n - 1] += sum((h_grams & r_grams).values())
            totals[n - 1] += max(len(h) - n + 1, 0)
    if min(matches) == 0 or hyp_len == 0:
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals)) / max_n
    brevity = min(0.0, 1.0 - ref_len / hyp_len)
    return 100.0 * math.exp(log_precision + brevity)


def bleu(hypotheses: list[str], references: list[str]) -> tuple[float, str]:
    try:
        import sacrebleu
    except ImportError:
        return corpus_bleu(hypotheses, references), "corpus BLEU-4 (built-in)"
    score = sacrebleu.corpus_bleu(hypotheses, [references], tokenize="none")
    return score.score, f"sacrebleu {sacrebleu.__version__} (tokenize=none)"


@torch.no_grad()
def translate(bundle, sources: list[str], *, batch_size: int = 64) -> list[str]:
    model, tokenizer = bundle.model, bundle.tokenizer
    max_length = bundle.meta.get("max_length", 64)
    out = []
    for k in range(0, len(sources), batch_size):
        enc = tokenizer(sources[k : k + batch_size], padding=True, return_tensors="pt")
        enc = enc.to(model.device)
        ids = model.generate(**enc, num_beams=1, do_sample=False, max_length=max_length)
        out += [" ".join(s.split()) for s in tokenizer.batch_decode(ids, skip_special_tokens=True)]
    return out


def evaluate(bundle, *, n: int = 1000, split: str = "test", seed: int | None = None,
             variant: str | None = None) -> dict:
    variant = variant or bundle.meta.get("variant", "base")
    data = toy.pairs(n, split=split, seed=seed, variant=variant)
    if bundle.meta.get("direction") == "reverse":
        data = [p.reversed() for p in data]
    hyps = translate(bundle, [p.src for p in data])
    refs = [p.tgt for p in data]
    score, bleu_kind = bleu(hyps, refs)
    exact = sum(h == r for h, r in zip(hyps, refs)) / len(data)
    errors = [(p.src, h, r) for p, h, r in zip(data, hyps, refs) if h != r]
    return {"exact_match": exact, "bleu": score, "bleu_kind": bleu_kind, "n": len(data),
            "split": split, "variant": variant, "errors": errors}


PROFILE_METHODS = ("raw", "norm", "decoder-rollout", "peak-weighted", "relevance")


def fit_bundle_profile(bundle, *, n: int = 200, variant: str | None = None, force: bool = False,
                       methods=PROFILE_METHODS, reverse_model: str | None = None):
    """Fit and save the alignment profile of a folder-backed model on ``n`` dev pairs."""
    from groundroll.alignment.profile import PROFILE_FILENAME, _model_folder, fit_profile

    folder = _model_folder(bundle)
    if folder is None:
        raise SystemExit(f"{bundle.name} has no model folder to write {PROFILE_FILENAME} into")
    variant = variant or bundle.meta.get("variant", "base")
    dev = toy.pairs(n, split="dev", variant=variant)
    profile = fit_profile(dev, model=bundle, methods=methods, reverse_model=reverse_model)
    profile.fitted.update(data=f"toy_translation.pairs({n}, split='dev', variant='{variant}')",
                          command="python training/eval_toy_mt.py --model "
                                  f"{bundle.name} --fit-profile --profile-n {n}"
                                  f" --profile-methods {','.join(methods)}"
                                  + (f" --reverse-model {reverse_model}" if reverse_model
                                     else ""))
    path = profile.save(folder, force=force)
    return profile, path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bundled:toy-mt", help="groundroll.load spec")
    ap.add_argument("--n", type=int, default=1000, help="number of held-out pairs")
    ap.add_argument("--split", default="test", choices=["dev", "test"])
    ap.add_argument("--seed", type=int, default=None, help="default: the split's seed")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--show-errors", type=int, default=5)
    ap.add_argument("--variant", default=None, choices=list(toy.VARIANTS),
                    help="language pair (default: the model's meta.json, else base)")
    ap.add_argument("--fit-profile", action="store_true",
                    help="also write the model's alignment profile from gold dev pairs")
    ap.add_argument("--profile-n", type=int, default=200, help="dev pairs for --fit-profile")
    ap.add_argument("--profile-methods", default=",".join(PROFILE_METHODS),
                    help="comma-separated methods --fit-profile compares")
    ap.add_argument("--force", action="store_true", help="replace an existing profile")
    ap.add_argument("--reverse-model", default=None,
                    help="a target-to-source model (spec) --fit-profile also scores for"
                         " symmetrized links")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    bundle = load(args.model)
    if args.fit_profile:
        profile, path = fit_bundle_profile(bundle, n=args.profile_n, variant=args.variant,
                                           force=args.force,
                                           methods=tuple(args.profile_methods.split(",")),
                                           reverse_model=args.reverse_model)
        print(f"profile -> {path}: {profile.align_kwargs()}  dev AER"
              f" {100 * profile.fitted['aer']:.1f}")
    result = evaluate(bundle, n=args.n, split=args.split, seed=args.seed, variant=args.variant)
    print(f"{args.model}: {result['n']} held-out {result['split']} pairs ({result['variant']})")
    print(f"exact match {100 * result['exact_match']:.1f}%")
    print(f"BLEU {result['bleu']:.2f}  [{result['bleu_kind']}]")
    for src, hyp, ref in result["errors"][: args.show_errors]:
        print(f"  src: {src}\n  hyp: {hyp}\n  ref: {ref}")
    return result


if __name__ == "__main__":
    main()
