"""Caption coverage: every class in transformers' ``MODEL_FOR_IMAGE_TEXT_TO_TEXT`` auto
mapping, and ``VisionEncoderDecoderModel`` with each encoder and decoder transformers
documents for captioning and OCR, built tiny with random weights and run through
``gr.ground_caption`` on a given caption (teacher-forced, the default method).

Each model gets a word-level tokenizer over a toy vocabulary (special ids ``[BOS]`` 0,
``[PAD]`` 1, ``[EOS]`` 2, ``[UNK]`` 3, as the tiny configs of
:mod:`groundroll.adapters.conformance`). Statuses:

- ``grounded``: the capture leaves the model's output unchanged, and every word of the
  caption gets a finite map at the image's pixels;
- ``refused``: groundroll says why the words cannot be mapped to pixels (a resampler, a
  windowed tower, an encoder-decoder language model);
- ``unsupported``: no caption family reads this model's image tokens yet (the message
  names those that do);
- ``not_built``: the tiny model could not be built at any shrink level;
- ``failing``: anything else.

    OMP_NUM_THREADS=1 python benchmarks/caption_coverage.py        # all (~5-10 min)
    python benchmarks/caption_coverage.py --models llava vision-encoder-decoder:vit+trocr

A run over all models also replaces the table between ``<!-- caption-coverage:start -->``
and ``<!-- caption-coverage:end -->`` in docs/how-to/captions.md; a run over selected
``--models`` writes only ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "caption_coverage.json"
PAGE = ROOT / "docs" / "how-to" / "captions.md"
START, END = "<!-- caption-coverage:start -->", "<!-- caption-coverage:end -->"

WORDS = ["[BOS]", "[PAD]", "[EOS]", "[UNK]", "a", "red", "blue", "circle", "square", "and",
         "star"]
CAPTION = "a red circle and a blue square"
#: ``VisionEncoderDecoderModel`` pairs: the encoders and decoders transformers documents
#: for image captioning and OCR (TrOCR; Donut is Swin + MBart).
ENCODER_DECODERS = (("vit", "gpt2"), ("deit", "bert"), ("beit", "roberta"),
                    ("vit", "trocr"), ("swin", "mbart"))
STATUSES = ("grounded", "refused", "unsupported", "not_built", "failing")


def _tokenizer():
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]",
        unk_token="[UNK]")


def names() -> list[str]:
    """Every model this sweep checks: the auto mapping's types, then the encoder-decoder
    pairs as ``vision-encoder-decoder:ENCODER+DECODER``."""
    from transformers.models.auto.modeling_auto import \
        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES as MAPPING

    out = [n for n in MAPPING if n != "vision-encoder-decoder"]
    return out + [f"vision-encoder-decoder:{e}+{d}" for e, d in ENCODER_DECODERS]


def _vision_marks(config) -> None:
    config.vision_start_token_id, config.vision_end_token_id = 61, 60


def _one_cross_layer(config) -> None:
    config.text_config.cross_attention_layers = [1]


#: What a default tiny config leaves out that the released checkpoints set: the Omni
#: thinkers' vision start / end token ids (their forward reads them), and a
#: cross-attention layer among Llama 3.2 Vision's two (its defaults start at layer 3).
TINY_FIXES = {"qwen2_5_omni_thinker": _vision_marks, "qwen3_omni_moe_thinker": _vision_marks,
              "mllama": _one_cross_layer}


def _build(name: str):
    """``(model, level)``: the tiny model, at the first shrink level that builds."""
    import torch
    import transformers
    from transformers.models.auto.modeling_auto import \
        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES as MAPPING

    from groundroll.adapters.conformance import LEVELS, check_size, tiny_config

    error = None
    for level in range(LEVELS):
        try:
            if name.startswith("vision-encoder-decoder:"):
                encoder, decoder = name.partition(":")[2].split("+")
                enc = tiny_config(encoder, level=level)
                dec = tiny_config(decoder, level=level)
                dec.is_decoder, dec.add_cross_attention = True, True
                config = transformers.VisionEncoderDecoderConfig \
                    .from_encoder_decoder_configs(enc, dec)
                cls = transformers.VisionEncoderDecoderModel
            else:
                config = tiny_config(name, level=level)
                if name in TINY_FIXES:
                    TINY_FIXES[name](config)
                cls_name = MAPPING[name]
                cls = getattr(transformers, cls_name if isinstance(cls_name, str)
                              else cls_name[0])
            if level:
                check_size(cls, config)
            torch.manual_seed(0)
            return cls(config).eval(), level
        except Exception as err:           # try less shrunk
            error = err
    raise error


def check_caption(name: str, tok) -> dict:
    import numpy as np
    import torch

    import groundroll as gr
    from groundroll.adapters import capture
    from groundroll.captioning import resolve_captioner
    from groundroll.families import UnsupportedModelError

    start = time.perf_counter()
    record = dict(name=name, status="failing", detail="")
    try:
        model, level = _build(name)
    except Exception as err:
        record.update(status="not_built", detail=f"{type(err).__name__}: {err}"[:200])
        return record
    record.update(level=level, cls=type(model).__name__)
    try:
        cm = resolve_captioner(model, tokenizer=tok)
    except (TypeError, UnsupportedModelError) as err:
        text = str(err)
        unknown = "not an image captioner" in text or "does not yet know" in text
        status = "unsupported" if unknown else "refused"
        record.update(status=status, detail=text.split("; families that are")[0])
        return record
    except Exception as err:
        record["detail"] = f"{type(err).__name__}: {str(err).splitlines()[0]}"[:200]
        return record
    record["family"] = cm.family
    h, w = cm.image_size
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    try:
        begin = cm.hooks.start_ids(model, tok)
        ids = torch.tensor([begin + tok(CAPTION, add_special_tokens=False)["input_ids"]])
        extra = {"prompt": len(begin)} if cm.hooks.decoder_only else {}
        pixels = cm.pixels(image)
        with torch.no_grad():
            plain = cm.hooks.forward(model, pixels, ids, **extra)
            with capture(model, streams=list(cm.hooks.streams)):
                captured = cm.hooks.forward(model, pixels, ids, **extra)
        unchanged = bool(torch.allclose(captured, plain, atol=1e-5, rtol=1e-4))
        result = gr.ground_caption(image, CAPTION, model=model, tokenizer=tok)
    except (TypeError, UnsupportedModelError) as err:
        record.update(status="refused", detail=str(err))
        return record
    except Exception as err:
        record["detail"] = f"{type(err).__name__}: {str(err).splitlines()[0]}"[:200]
        return record
    n = len(CAPTION.split())
    good = (unchanged and result.heatmaps.shape == (n, h, w)
            and bool(np.isfinite(result.heatmaps).all()))
    record.update(status="grounded" if good else "failing",
                  detail="" if good else ("the capture changed the output" if not unchanged
                                          else "word maps of the wrong shape or not finite"),
                  method=result.settings["method"], streams=list(cm.hooks.streams),
                  seconds=round(time.perf_counter() - start, 3))
    return record


def table(records: list[dict], version: str) -> str:
    """The Markdown block for the how-to page: counts, then the models of each status."""
    counts = {s: [r["name"] for r in records if r["status"] == s] for s in STATUSES}
    head = " | ".join(STATUSES)
    row = " | ".join(str(len(counts[s])) for s in STATUSES)
    lines = [f"transformers {version}, {len(records)} models:", "",
             f"| {head} |", "|" + "---:|" * len(STATUSES), f"| {row} |", ""]
    for status in STATUSES:
        if counts[status]:
            names = ", ".join(f"`{n}`" for n in counts[status])
            lines.append(f"- **{status}**: {names}")
    reasons = [r for r in records if r["status"] in ("refused", "failing")]
    if reasons:
        lines += ["", "Refused and failing, with the reason:", ""]
        lines += [f"- `{r['name']}`: {r['detail'].split(': ', 1)[-1]}" for r in reasons]
    return "\n" + "\n".join(lines) + "\n"


def write_page(text: str, page: Path = PAGE) -> None:
    """Replace the block between the markers in ``page`` (left alone without them)."""
    content = page.read_text()
    if START not in content or END not in content:
        return
    head, _, rest = content.partition(START)
    _, _, tail = rest.partition(END)
    tmp = page.with_suffix(".md.tmp")
    tmp.write_text(head + START + text + END + tail)
    tmp.replace(page)


def _job(name: str) -> dict:
    warnings.filterwarnings("ignore")
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(1)
    try:
        return check_caption(name, _tokenizer())
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

    todo = [n for n in names() if not args.models or n in args.models]
    records = []
    for name in todo:
        record = run_isolated(_job, name, memory_gb=args.memory_gb, timeout=args.timeout)
        print(f"{record['name']:36s} {record['status']:11s} {record['detail'][:100]}",
              flush=True)
        records.append(record)
    counts = {s: sum(r["status"] == s for r in records) for s in STATUSES}
    print(counts)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"versions": {"transformers": transformers.__version__},
                                    "counts": counts, "results": records}, indent=1))
    if not args.models:
        write_page(table(records, transformers.__version__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
