"""Train the bundled toy-mt model: a tiny MarianMT on the toy translation pair.

Usage::

    python training/toy_mt.py --out groundroll/zoo/bundled/toy-mt --steps 3000 --seed 0
    python training/toy_mt.py --variant hard --out groundroll/zoo/bundled/toy-mt-hard ...

Builds a BPE tokenizer (Metaspace ``▁`` word starts, vocabulary shared by both languages)
with the ``tokenizers`` library, wraps it as a ``PreTrainedTokenizerFast``, trains a
3+3-layer ``MarianMTModel`` with teacher-forced cross-entropy on freshly drawn training
pairs, measures held-out exact match, and saves everything with ``save_pretrained`` plus
``meta.json``. Everything is deterministic from ``--seed`` (up to CPU thread scheduling
of floating-point sums).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from groundroll.data import toy_translation as toy  # noqa: E402

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
MAX_LENGTH = 64


def build_tokenizer(vocab_size: int, *, seed: int, n_sentences: int = 20000, variant: str = "base"):
    """Train a shared BPE tokenizer on training pairs and wrap it for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = []
    for pair in toy.pairs(n_sentences, seed=seed + 10_000, split="train", variant=variant):
        corpus += [pair.src, pair.tgt]
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[PAD, EOS, UNK], show_progress=False
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    eos_id = tok.token_to_id(EOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A $B {EOS}", special_tokens=[(EOS, eos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        model_max_length=MAX_LENGTH,
        padding_side="right",
    )


def build_model(tokenizer, *, d_model: int, seed: int, ffn_dim: int = 512):
    from transformers import MarianConfig, MarianMTModel

    torch.manual_seed(seed)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    config = MarianConfig(
        vocab_size=len(tokenizer),
        decoder_vocab_size=len(tokenizer),
        d_model=d_model,
        encoder_layers=3,
        decoder_layers=3,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=ffn_dim,
        decoder_ffn_dim=ffn_dim,
        max_position_embeddings=MAX_LENGTH,
        dropout=0.1,
        attention_dropout=0.0,
        activation_function="gelu",
        scale_embedding=True,
        pad_token_id=pad,
        eos_token_id=eos,
        decoder_start_token_id=pad,
        forced_eos_token_id=eos,
        share_encoder_decoder_embeddings=True,
        tie_word_embeddings=True,
    )
    model = MarianMTModel(config)
    gen = model.generation_config
    gen.max_length, gen.num_beams, gen.do_sample = MAX_LENGTH, 1, False
    gen.pad_token_id, gen.eos_token_id, gen.decoder_start_token_id = pad, eos, pad
    gen.bad_words_ids = [[pad]]
    return model


def encode(tokenizer, batch):
    enc = tokenizer(
        [p.src for p in batch],
        text_target=[p.tgt for p in batch],
        padding=True,
        return_tensors="pt",
    )
    labels = enc["labels"]
    labels[labels == tokenizer.pad_token_id] = -100
    return enc


@torch.no_grad()
def translate(model, tokenizer, sources, *, batch_size: int = 64) -> list[str]:
    """Greedy translations of source strings."""
    model.eval()
    out = []
    for k in range(0, len(sources), batch_size):
        enc = tokenizer(sources[k : k + batch_size], padding=True, return_tensors="pt")
        ids = model.generate(**enc, num_beams=1, do_sample=False, max_length=MAX_LENGTH)
        out += [" ".join(s.split()) for s in tokenizer.batch_decode(ids, skip_special_tokens=True)]
    return out


def exact_match(model, tokenizer, data) -> float:
    hyps = translate(model, tokenizer, [p.src for p in data])
    return sum(h == p.tgt for h, p in zip(hyps, data)) / max(len(data), 1)


def _portable_tokenizer_config(folder: Path) -> None:
    """Name the generic fast tokenizer class that transformers 4 and 5 both resolve."""
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text())
    for key in ("backend", "is_local", "local_files_only"):  # facts of this session only
        config.pop(key, None)
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(config, indent=2) + "\n")


def _stages(previous: dict | None) -> list[dict]:
    if not previous:
        return []
    keys = ("seed", "steps", "lr", "train_seconds")
    return previous.get("stages") or [{k: previous.get(k) for k in keys}]


def _direction(pairs, reverse: bool):
    """Pairs as given, or read target-to-source (:meth:`toy.Pair.reversed`)."""
    return (p.reversed() for p in pairs) if reverse else pairs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (save_pretrained + meta.json)")
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--variant", default="base", choices=list(toy.VARIANTS),
                    help="which toy language pair (hard: polysemy, idioms, long reordering)")
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--ffn-dim", type=int, default=512)
    ap.add_argument("--vocab-size", type=int, default=1000)
    ap.add_argument("--tokenizer-sentences", type=int, default=20000,
                    help="training pairs the tokenizer is learned from")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--eval-n", type=int, default=500, help="held-out pairs for the final exact match")
    ap.add_argument("--max-minutes", type=float, default=None, help="stop early after this wall time")
    ap.add_argument("--reverse", action="store_true",
                    help="train the target-to-source model (for symmetrised alignments)")
    ap.add_argument("--fp16", action="store_true", help="save weights as float16")
    ap.add_argument("--init", default=None,
                    help="continue from a folder saved by this recipe (use a new --seed)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    if args.init:
        # Continue training a saved model (its tokenizer and architecture are kept).
        from transformers import AutoTokenizer, MarianMTModel

        torch.manual_seed(args.seed)
        tokenizer = AutoTokenizer.from_pretrained(args.init)
        model = MarianMTModel.from_pretrained(args.init, dtype=torch.float32)
        # The variant may change: a base model continued on --variant hard keeps its
        # tokenizer, which splits the hard variant's new words into several pieces.
        previous = json.loads((Path(args.init) / "meta.json").read_text())
    else:
        tokenizer = build_tokenizer(args.vocab_size, seed=args.seed,
                                    n_sentences=args.tokenizer_sentences, variant=args.variant)
        model = build_model(tokenizer, d_model=args.d_model, seed=args.seed, ffn_dim=args.ffn_dim)
        previous = None
    n_params = sum(p.numel() for p in model.parameters())
    print(f"vocab {len(tokenizer)}  params {n_params}", flush=True)

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)

    budget = 60 * args.max_minutes if args.max_minutes else None

    def lr_at(step):
        # Linear warmup, then cosine decay to 5%. With --max-minutes the decay follows
        # whichever runs out first, steps or time, so a time-limited run still anneals.
        if step < args.warmup:
            return (step + 1) / args.warmup
        t = (step - args.warmup) / max(1, args.steps - args.warmup)
        if budget:
            t = max(t, (time.time() - start) / budget)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    start = time.time()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    stream = _direction(toy.iter_pairs(seed=args.seed, split="train", variant=args.variant),
                        args.reverse)
    dev = list(_direction(toy.pairs(200, split="dev", variant=args.variant), args.reverse))
    step, history = 0, []
    bar = tqdm(range(args.steps), desc="toy-mt" if args.variant == "base" else f"toy-mt-{args.variant}",
               mininterval=5.0)
    for step in bar:
        model.train()
        enc = encode(tokenizer, [next(stream) for _ in range(args.batch_size)])
        loss = model(**enc).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        if args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            em = exact_match(model, tokenizer, dev[:100])
            history.append({"step": step + 1, "loss": round(loss.item(), 4), "dev_exact_match": em})
            print(f"\nstep {step + 1} loss {loss.item():.4f} dev exact match {em:.3f}", flush=True)
        if args.max_minutes and time.time() - start > 60 * args.max_minutes:
            print(f"\nstopping at step {step + 1}: --max-minutes reached", flush=True)
            break
    steps_done = step + 1
    train_seconds = time.time() - start

    test = list(_direction(toy.pairs(args.eval_n, split="test", variant=args.variant),
                           args.reverse))
    em = exact_match(model, tokenizer, test)
    print(f"held-out exact match {em:.4f} on {len(test)} test pairs", flush=True)

    model.eval()
    if args.fp16:
        model = model.half()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    _portable_tokenizer_config(out)
    meta = {
        "family": "hf_seq2seq",
        "adapter": "hf_marian",
        "model_class": "MarianMTModel",
        "data": "groundroll.data.toy_translation",
        "variant": args.variant,
        "direction": "reverse" if args.reverse else "forward",
        "recipe": " && ".join(
            ([previous["recipe"]] if previous else [])
            + ["python training/toy_mt.py " + " ".join(list(sys.argv[1:] if argv is None else argv))]
        ),
        "stages": _stages(previous)
        + [{"variant": args.variant, "seed": args.seed, "steps": steps_done, "lr": args.lr,
            "train_seconds": round(train_seconds, 1),
            "argv": list(sys.argv[1:] if argv is None else argv)}],
        "seed": args.seed,
        "steps": steps_done + (previous["steps"] if previous else 0),
        "batch_size": args.batch_size,
        "lr": args.lr,
        "train_seconds": round(train_seconds + (previous["train_seconds"] if previous else 0), 1),
        "threads": args.threads,
        "params": n_params,
        "vocab_size": len(tokenizer),
        "weights_dtype": "float16" if args.fp16 else "float32",
        "max_length": MAX_LENGTH,
        "max_source_words": toy.MAX_WORDS if args.variant == "base" else 18,
        "quality": {"test_exact_match": em, "test_pairs": len(test), "split": "test"},
        "history": history,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


if __name__ == "__main__":
    main()
