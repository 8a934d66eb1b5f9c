"""Word alignment on held-out toy pairs: every groundroll method beside its peers.

Forced decoding on the gold target of ``--n`` held-out pairs of a toy language pair
(``groundroll.data.toy_translation``, split "test", its conventional seed; ``--variant
hard`` for the hard pair and the ``bundled:toy-mt-hard`` model). Sections:

1. **groundroll methods**: every method x layer x shift (``layer_scan``; argmax
   extraction), each beside raw cross-attention of the same layer and shift;
   ``relevance`` on the first ``--relevance-n`` pairs.
2. **default call**: ``gr.align(src, tgt, model=...)`` as a user calls it (the model's
   alignment profile), the unsupervised rule (``profile=False``) and the former default
   (``method="raw"``, mean of all layers).
3. **peers**: eflomal (statistical, no neural model; trained on ``--eflomal-train``
   training pairs plus the test pairs, both directions, symmetrized with groundroll's
   grow-diag-final-and) and inseq 0.7.1's ``attention`` and ``saliency`` on the same
   model (first ``--inseq-n`` pairs), with and without the Marian decoder embedding
   scale workaround (``model.model.decoder.embed_scale = 1.0``: with transformers >=
   4.53 Marian scales decoder embeddings that inseq passes in already scaled).
4. **composition study** (:mod:`groundroll.alignment.composition`): the end-to-end rollout
   with encoder mixing, decoder self-attention and the residual share switched off one by
   one, and the composed alternatives.
5. **throughput**: sentences per second of each method and peer.

AER, precision (P) and recall (R) in percent (gold: sure links only).

Usage::

    python benchmarks/alignment.py [--variant base|hard] [--n 500] [--peers eflomal,inseq]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from groundroll.alignment.api import align, layer_scan
from groundroll.alignment.links import grow_diag_final_and
from groundroll.alignment.subwords import word_matrix
from groundroll.data import toy_translation as toy
from groundroll.evaluate import aer
from groundroll.zoo import bundled, load

MODELS = {"base": "bundled:toy-mt", "hard": "bundled:toy-mt-hard"}
SCAN_METHODS = ("raw", "norm", "rollout", "decoder-rollout", "peak-weighted")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _score(pairs, found) -> dict:
    gold = [p.alignment for p in pairs]
    s = aer(gold, None, found)
    return dict(aer=s.aer, precision=s.precision, recall=s.recall, n_pairs=len(pairs))


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


# ----------------------------------------------------------------------------- eflomal


def eflomal_links(pairs, *, train_pairs=(), seed: int = 0):
    """eflomal forward, reverse and grow-diag-final-and links for ``pairs``.

    eflomal is trained on ``train_pairs`` followed by ``pairs`` (unsupervised: no gold
    links are used); the links of the last ``len(pairs)`` sentences are returned.
    """
    import tempfile

    from eflomal import Aligner

    src = [p.src for p in train_pairs] + [p.src for p in pairs]
    tgt = [p.tgt for p in train_pairs] + [p.tgt for p in pairs]
    np.random.seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        fwd_file, rev_file = Path(tmp) / "fwd", Path(tmp) / "rev"
        Aligner().align(src, tgt, links_filename_fwd=str(fwd_file),
                        links_filename_rev=str(rev_file), quiet=True)
        fwd_lines = fwd_file.read_text().splitlines()
        rev_lines = rev_file.read_text().splitlines()

    def parse(line):
        return {tuple(int(x) for x in item.split("-")) for item in line.split()}

    keep = slice(len(src) - len(pairs), len(src))
    fwd = [parse(line) for line in fwd_lines[keep]]
    rev = [parse(line) for line in rev_lines[keep]]
    sym = [grow_diag_final_and(f, r) for f, r in zip(fwd, rev)]
    return fwd, rev, sym


# ----------------------------------------------------------------------------- inseq


def _word_ids(tokens: list[str]) -> list[int | None]:
    """SentencePiece-style word ids: a token starting with '▁' starts a word."""
    out, word = [], -1
    for tok in tokens:
        if tok in ("</s>", "<pad>", "<unk>", "<s>"):
            out.append(None)
            continue
        if tok.startswith("▁") or word < 0:
            word += 1
        out.append(word)
    return out


def inseq_matrices(bundle, pairs, *, method: str, fix_embed_scale: bool,
                   layer: int | None = -1) -> list[np.ndarray]:
    """Word matrices ``[T, S]`` from inseq's ``attention`` or ``saliency`` attributions.

    ``attention``: the cross-attention of ``layer`` (None: mean of all layers), mean over
    heads, at the step that predicts each target token (AWO). ``saliency``: L2 norm over
    the embedding dimension of the gradient attributions. With ``fix_embed_scale`` the
    Marian decoder's embedding scale is set to 1 while inseq runs (and restored).
    """
    import inseq

    model = bundle.model
    decoder = model.model.decoder
    old_scale = getattr(decoder, "embed_scale", None)
    old_impl = model.config._attn_implementation
    model.set_attn_implementation("eager")     # inseq needs attention weights
    try:
        wrapped = inseq.load_model(model, method, tokenizer=bundle.tokenizer)
        if fix_embed_scale and old_scale is not None:
            # After loading: inseq refuses different encoder and decoder scales.
            decoder.embed_scale = 1.0
        out = wrapped.attribute([p.src for p in pairs], generated_texts=[p.tgt for p in pairs],
                                show_progress=False, batch_size=1)
    finally:
        if old_scale is not None:
            decoder.embed_scale = old_scale
        model.set_attn_implementation(old_impl)
    mats = []
    for p, attr in zip(pairs, out.sequence_attributions):
        a = attr.source_attributions.float()              # [S_tok, T_steps, ...]
        if method == "attention":
            a = a.mean(-1)                                 # heads
            a = a[..., layer] if layer is not None else a.mean(-1)
        else:
            a = a.norm(dim=-1)
        src_tok = [t.token for t in attr.source]
        tgt_tok = [t.token for t in attr.target][attr.attr_pos_start:attr.attr_pos_end]
        m = a.T.cpu().numpy()                              # [T_steps, S_tok]
        mats.append(word_matrix(m, _word_ids(tgt_tok), _word_ids(src_tok),
                                n_tgt=len(p.tgt_words), n_src=len(p.src_words)))
    return mats


# ----------------------------------------------------------------------------- main


def _table(rows, head):
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="base", choices=list(toy.VARIANTS))
    ap.add_argument("--model", default=None, help="default: the variant's bundled model")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--relevance-n", type=int, default=100)
    ap.add_argument("--inseq-n", type=int, default=100)
    ap.add_argument("--eflomal-train", type=int, default=10000,
                    help="training pairs added to the test pairs for eflomal")
    ap.add_argument("--peers", default="eflomal,inseq",
                    help="comma-separated peers to run (eflomal, inseq); '' for none")
    ap.add_argument("--speed-n", type=int, default=100, help="pairs for the throughput runs")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write every figure to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = args.model or MODELS[args.variant]
    if spec.startswith("bundled:") and spec.split(":", 1)[1] not in bundled():
        print(f"{spec} is not available (bundled: {bundled()}); nothing to measure")
        return 0
    bundle = load(spec)
    pairs = toy.pairs(args.n, split="test", variant=args.variant)
    srcs, tgts = [p.src for p in pairs], [p.tgt for p in pairs]
    n_rel, n_inseq = min(args.relevance_n, args.n), min(args.inseq_n, args.n)
    results: dict = dict(model=spec, variant=args.variant, n=args.n, threads=args.threads)
    speed: list = []
    print(f"# Alignment on {args.n} held-out {args.variant} toy pairs ({spec})\n")
    print("Forced decoding on the gold target; argmax extraction unless stated; AER, P, R"
          f" in percent; {args.threads} CPU thread(s).\n")

    # 1. groundroll methods ------------------------------------------------------------
    scan, _ = _timed(lambda: layer_scan(pairs, model=bundle, methods=SCAN_METHODS,
                                        batch_size=args.batch_size))
    rel = layer_scan(pairs[:n_rel], model=bundle, methods=("raw", "relevance"),
                     batch_size=args.batch_size)
    results["scan"] = scan.rows
    results["relevance_scan"] = rel.rows
    base = {(r["layer"], r["shift"]): r for r in scan.rows if r["method"] == "raw"}
    base_rel = {(r["layer"], r["shift"]): r for r in rel.rows if r["method"] == "raw"}
    rows = []
    all_rows = scan.rows + [r for r in rel.rows if r["method"] == "relevance"]
    best = min(all_rows, key=lambda r: r["aer"])
    for r in all_rows:
        b = (base_rel if r["method"] == "relevance" else base).get((r["layer"], r["shift"]))
        cells = [r["method"], r["layer"], "AWI" if r["shift"] else "AWO", r["n_pairs"],
                 _pct(r["aer"]), _pct(r["precision"]), _pct(r["recall"]),
                 "" if b is None else _pct(b["aer"]),
                 "" if b is None or r["method"] == "raw" else f"{100 * (r['aer'] - b['aer']):+.1f}"]
        if r is best:
            cells = [f"**{c}**" if c != "" else c for c in cells]
        rows.append(cells)
    print("## 1. groundroll methods (layer l: raw/norm = that layer's cross-attention,"
          " 'all' = mean of all layers; composed methods = decoder layers 0..l)\n")
    print(_table(rows, ["method", "layer", "shift", "pairs", "AER", "P", "R",
                        "raw AER (same layer, shift)", "Δ vs raw"]))

    # 2. the default call --------------------------------------------------------------
    print("\n## 2. The default call\n")
    calls = [("gr.align(src, tgt, model=m)", {}),
             ("profile=False (unsupervised rule)", dict(profile=False)),
             ("method='raw' (mean of all layers, former default)", dict(method="raw"))]
    rows = []
    for label, kw in calls:
        out, secs = _timed(lambda: align(srcs, tgts, model=bundle, batch_size=args.batch_size,
                                         **kw))
        s = _score(pairs, [a.links for a in out])
        st = out[0].settings
        how = (f"{st['method']} layers {st['layers']} {'AWI' if st['shift'] else 'AWO'}"
               f" {st['extraction']}{' + ' + st['symmetrize'] if st['symmetrize'] else ''}")
        if "peak_mass" in st:
            how += " (peak mass per layer " + ", ".join(f"{x:.3f}" for x in st["peak_mass"]) + ")"
        rows.append([label, how, st["defaults"].split(":")[0], _pct(s["aer"]), _pct(s["precision"]),
                     _pct(s["recall"]), f"{len(pairs) / secs:.0f}"])
        results.setdefault("default_call", []).append(dict(call=label, settings=how, **s))
        speed.append((label, len(pairs) / secs))
    print(_table(rows, ["call", "settings used", "from", "AER", "P", "R", "sent/s"]))
    default_aer = results["default_call"][0]["aer"]

    # 3. peers -------------------------------------------------------------------------
    peers = [p for p in args.peers.split(",") if p]
    rows = []
    if "eflomal" in peers:
        try:
            train = toy.pairs(args.eflomal_train, split="train", variant=args.variant)
            (fwd, rev, sym), secs = _timed(lambda: eflomal_links(pairs, train_pairs=train))
            for label, links in (("eflomal forward", fwd), ("eflomal reverse", rev),
                                 ("eflomal grow-diag-final-and", sym)):
                s = _score(pairs, links)
                rows.append([label, len(pairs), _pct(s["aer"]), _pct(s["precision"]),
                             _pct(s["recall"]), f"{(len(train) + len(pairs)) / secs:.0f}"
                             " (training + test)"])
                results.setdefault("peers", []).append(dict(peer=label, **s))
            speed.append(("eflomal (train + align)", (len(train) + len(pairs)) / secs))
        except ImportError:
            rows.append(["eflomal: not installed (pip install 'groundroll[bench]')",
                         "", "", "", "", ""])
    if "inseq" in peers:
        try:
            sub = pairs[:n_inseq]
            for method, fix, layer in (("attention", False, -1), ("attention", True, -1),
                                       ("attention", True, None), ("saliency", False, None),
                                       ("saliency", True, None)):
                mats, secs = _timed(lambda: inseq_matrices(bundle, sub, method=method,
                                                           fix_embed_scale=fix, layer=layer))
                from groundroll.alignment.api import extract_links

                s = _score(sub, [extract_links(m) for m in mats])
                what = method + ("" if method == "saliency" else
                                 " last layer" if layer == -1 else " mean of layers")
                label = f"inseq {what}, embed_scale fix {'on' if fix else 'off'}"
                rows.append([label, len(sub), _pct(s["aer"]), _pct(s["precision"]),
                             _pct(s["recall"]), f"{len(sub) / secs:.1f}"])
                results.setdefault("peers", []).append(dict(peer=label, **s))
                speed.append((label, len(sub) / secs))
            g = align([p.src for p in sub], [p.tgt for p in sub], model=bundle)
            s = _score(sub, [a.links for a in g])
            rows.append([f"groundroll default call (same {len(sub)} pairs)", len(sub),
                         _pct(s["aer"]), _pct(s["precision"]), _pct(s["recall"]), ""])
            results.setdefault("peers", []).append(dict(peer="groundroll default, inseq subset", **s))
        except ImportError:
            rows.append(["inseq: not installed (pip install 'inseq>=0.7.1')", "", "", "", "", ""])
    if rows:
        print("\n## 3. Peers\n")
        print(_table(rows, ["aligner", "pairs", "AER", "P", "R", "sent/s"]))
        print(f"\ngroundroll default call on all {len(pairs)} pairs: AER {_pct(default_aer)}")

    # 4. composition study -------------------------------------------------------------
    from groundroll.alignment.composition import composition_study

    study = composition_study(pairs, model=bundle, batch_size=args.batch_size)
    results["composition"] = dict(rows=study.rows, residual_share=study.residual_share)
    print("\n## 4. Composition study (rollout parts switched off; argmax)\n")
    print(study.to_markdown())
    share = study.residual_share
    print(f"\nRollout source mass from the last layer's own row: {100 * share['last_row']:.1f}%;"
          f" from earlier layers and rows: {100 * share['earlier']:.1f}%; encoder rollout"
          f" mass kept on the diagonal: {100 * share['encoder_diagonal']:.1f}%.")

    # 5. throughput --------------------------------------------------------------------
    print(f"\n## 5. Throughput (align(), batch {args.batch_size}, {args.threads} thread(s))\n")
    sub = pairs[:min(args.speed_n, args.n)]
    for method in ("raw", "norm", "rollout", "decoder-rollout", "peak-weighted", "relevance"):
        n = min(len(sub), n_rel) if method == "relevance" else len(sub)
        _, secs = _timed(lambda: align([p.src for p in sub[:n]], [p.tgt for p in sub[:n]],
                                       model=bundle, method=method, batch_size=args.batch_size))
        speed.append((f"groundroll {method}", n / secs))
    print(_table([[name, f"{rate:.1f}"] for name, rate in speed], ["what", "sentences / s"]))
    results["speed"] = speed
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
