"""Tiny random seq2seq models of the families captured from their returned attention
(FSMT, ProphetNet, LongT5, MVP, Pegasus-X), each with an offline tokenizer of its own
subword convention, for ``gr.align`` end to end.

Tokenizers are trained here with ``tokenizers`` on toy-language sentences:

=============  ==============================================  ====================
family         convention                                      as the real model
=============  ==============================================  ====================
fsmt           BPE with the ``</w>`` end-of-word suffix         FSMT (fairseq BPE)
prophetnet     WordPiece, ``##`` continuation pieces            ProphetNet (BERT)
longt5         Unigram, SentencePiece ``▁`` word starts         LongT5
pegasus_x      Unigram, SentencePiece ``▁`` word starts         Pegasus-X
mvp            byte-level BPE, ``Ġ`` word starts                MVP (BART's BPE)
=============  ==============================================  ====================

Special ids follow the tiny configs of :mod:`groundroll.adapters.conformance`: ``<s>`` 0,
``<pad>`` 1, ``</s>`` 2 (also the decoder start), ``<unk>`` 3. Nothing is downloaded.
"""

from __future__ import annotations

import functools

import torch

from groundroll.data import toy_translation as toy
from groundroll.zoo import Bundle

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
CONVENTIONS = {"fsmt": "suffix", "prophetnet": "wordpiece", "longt5": "unigram",
               "pegasus_x": "unigram", "mvp": "bytelevel"}
FAMILIES = tuple(CONVENTIONS)


def _corpus(n: int = 300) -> list[str]:
    out = []
    for pair in toy.pairs(n, seed=7, split="train"):
        out += [pair.src, pair.tgt]
    return out


@functools.lru_cache(maxsize=None)
def tokenizer(convention: str, *, vocab: int = 120):
    """A fast tokenizer of one subword ``convention`` (see the module table) that ends
    every sentence with ``</s>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    common = dict(vocab_size=vocab, special_tokens=SPECIALS, show_progress=False)
    if convention == "suffix":
        tok = Tokenizer(models.BPE(unk_token="<unk>", end_of_word_suffix="</w>"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.decoder = decoders.BPEDecoder(suffix="</w>")
        trainer = trainers.BpeTrainer(end_of_word_suffix="</w>", **common)
    elif convention == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(**common)
    elif convention == "unigram":
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        trainer = trainers.UnigramTrainer(unk_token="<unk>", **common)
    elif convention == "bytelevel":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), **{**common, "vocab_size": 400})
    else:
        raise ValueError(f"unknown convention {convention!r}")
    tok.train_from_iterator(_corpus(), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", pad_token="<pad>",
                                   eos_token="</s>", unk_token="<unk>", model_max_length=64,
                                   padding_side="right")


def build(model_type: str, seed: int = 0) -> Bundle:
    """A tiny random ``*ForConditionalGeneration`` of ``model_type`` with its tokenizer."""
    import transformers
    from transformers import CONFIG_MAPPING

    from groundroll.adapters.conformance import _shrink

    tok = tokenizer(CONVENTIONS[model_type])
    config_cls = CONFIG_MAPPING[model_type]
    kwargs = _shrink(config_cls)
    for key in ("vocab_size", "src_vocab_size", "tgt_vocab_size"):
        if key in config_cls().to_dict():
            kwargs[key] = len(tok)
    kwargs.update(pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2)
    config = config_cls(**kwargs)
    torch.manual_seed(seed)
    model = transformers.AutoModelForSeq2SeqLM.from_config(config).eval()
    gen = model.generation_config
    gen.max_length, gen.num_beams, gen.do_sample = 12, 1, False
    return Bundle(f"tiny-{model_type}", model, f"hf_{model_type}", tokenizer=tok,
                  meta={"family": "hf_marian", "kind": "hf_seq2seq"})


def held_out(n: int = 3):
    return toy.pairs(n, split="test")
