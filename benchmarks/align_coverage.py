"""Alignment coverage: every class in transformers' ``MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM``
auto mapping built tiny with random weights and run through ``gr.align`` on toy sentence
pairs (forced decoding, ``method="raw"``).

Each model gets an offline SentencePiece-style Unigram tokenizer trained on the toy
language (special ids ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3, as the tiny
configs of :mod:`groundroll.adapters.conformance`); the family's own subword conventions
(FSMT's ``</w>``, WordPiece, byte-level BPE) are exercised in
``tests/test_returned_capture.py``. Statuses:

- ``aligned``: a word matrix of the right shape, finite, with links inside the words;
- ``refused``: groundroll says why rollout does not apply (LED's local attention);
- ``not_text``: a speech or audio generator (audio features in, or one causal sequence
  rather than an encoder-decoder), with no sentence pair to align;
- ``not_built``: the tiny model could not be built at any shrink level;
- ``failing``: anything else.

    OMP_NUM_THREADS=1 python benchmarks/align_coverage.py       # all (~2-4 min)
    python benchmarks/align_coverage.py --models fsmt longt5
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "align_coverage.json"


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from groundroll.data import toy_translation as toy

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    corpus = [s for p in toy.pairs(300, seed=7, split="train") for s in (p.src, p.tgt)]
    tok.train_from_iterator(corpus, trainer=trainers.UnigramTrainer(
        vocab_size=120, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], unk_token="<unk>",
        show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", pad_token="<pad>",
                                   eos_token="</s>", unk_token="<unk>", model_max_length=64)


def _set_vocab(kwargs: dict, size: int) -> None:
    for key in list(kwargs):
        if key in ("vocab_size", "src_vocab_size", "tgt_vocab_size", "decoder_vocab_size"):
            kwargs[key] = size
        elif isinstance(kwargs[key], dict):
            _set_vocab(kwargs[key], size)


def _build(model_type: str, size: int):
    import torch
    import transformers
    from transformers import CONFIG_MAPPING

    from groundroll.adapters.conformance import LEVELS, _shrink, check_size

    config_cls = CONFIG_MAPPING[model_type]
    error = None
    for level in range(LEVELS):
        try:
            kwargs = _shrink(config_cls, level=level)
            _set_vocab(kwargs, size)
            # T5-style configs keep the decoder start in the generation config only.
            kwargs.update(pad_token_id=1, eos_token_id=2, decoder_start_token_id=2)
            if "vocab_size" not in kwargs and "vocab_size" in config_cls().to_dict():
                kwargs["vocab_size"] = size
            config = config_cls(**kwargs)
            cls = transformers.AutoModelForSeq2SeqLM._model_mapping[type(config)]
            if level:
                check_size(cls, config)
            torch.manual_seed(0)
            return cls(config).eval(), level
        except Exception as err:           # try less shrunk
            error = err
    raise error


def check_align(model_type: str, tok, pairs) -> dict:
    import groundroll as gr
    from groundroll.families import UnsupportedModelError
    from groundroll.zoo import Bundle

    import transformers
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES as SEQ2SEQ)

    start = time.perf_counter()
    record = dict(name=model_type, status="failing", detail="")
    cls = getattr(transformers, SEQ2SEQ[model_type], None)
    main = getattr(cls, "main_input_name", "input_ids")
    if main != "input_ids":
        # Speech and audio generators: no sentence to align (and no build needed).
        record.update(status="not_text", detail=f"main input {main!r}")
        return record
    try:
        model, level = _build(model_type, len(tok))
    except Exception as err:
        record.update(status="not_built", detail=f"{type(err).__name__}: {err}"[:200])
        return record
    record["level"] = level
    if not getattr(model.config, "is_encoder_decoder", False):
        # An audio language model listed as a generator: one causal sequence, no
        # source/target pair to align.
        record.update(status="not_text", detail="not an encoder-decoder (speech or audio"
                                                " language model)")
        return record
    bundle = Bundle(f"tiny-{model_type}", model, "", tokenizer=tok)
    srcs, tgts = [p.src for p in pairs], [p.tgt for p in pairs]
    try:
        out = gr.align(srcs, tgts, model=bundle, method="raw")
    except UnsupportedModelError as err:
        record.update(status="refused", detail=str(err)[:200])
        return record
    except Exception as err:
        record["detail"] = f"{type(err).__name__}: {str(err).splitlines()[0]}"[:200]
        return record
    import numpy as np

    good = all(a.matrix.shape == (len(t.split()), len(s.split()))
               and np.isfinite(a.matrix).all()
               and all(0 <= i < len(s.split()) and 0 <= j < len(t.split()) for i, j in a.links)
               for a, s, t in zip(out, srcs, tgts))
    record.update(status="aligned" if good else "failing",
                  detail="" if good else "word matrix of the wrong shape or not finite",
                  pharaoh=out[0].pharaoh(), seconds=round(time.perf_counter() - start, 3))
    return record


def _job(name: str) -> dict:
    warnings.filterwarnings("ignore")
    import torch
    import transformers

    from groundroll.data import toy_translation as toy

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(1)
    try:
        return check_align(name, _tokenizer(), toy.pairs(2, split="test"))
    except MemoryError as err:
        return dict(name=name, status="not_built", detail=f"MemoryError: {err}"[:200])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--memory-gb", type=float, default=6.0,
                        help="address-space cap of each model's worker process")
    parser.add_argument("--timeout", type=int, default=120, help="seconds per model")
    args = parser.parse_args(argv)
    from _isolated import run_isolated

    import transformers
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES as SEQ2SEQ)

    names = [n for n in SEQ2SEQ if not args.models or n in args.models]
    records = []
    for name in names:
        record = run_isolated(_job, name, memory_gb=args.memory_gb, timeout=args.timeout)
        print(f"{record['name']:28s} {record['status']:10s} {record['detail'][:110]}",
              flush=True)
        records.append(record)
    counts = {s: sum(r["status"] == s for r in records)
              for s in ("aligned", "refused", "not_text", "not_built", "failing")}
    print(counts)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"versions": {"transformers": transformers.__version__},
                                    "counts": counts, "results": records}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
