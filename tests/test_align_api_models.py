"""Offline tokenizers and tiny translation models for the alignment tests.

Tokenizers are trained here with ``tokenizers`` on toy-language sentences (BPE or
Unigram with SentencePiece-style ``"▁"`` word starts) and wrapped as
``PreTrainedTokenizerFast``; models are tiny random Marian and T5 sized to them.
Nothing is downloaded.
"""

from __future__ import annotations

import functools

import torch

from groundroll.data import toy_translation as toy
from groundroll.zoo import Bundle

MARIAN_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]       # pad = decoder start = 1
T5_SPECIALS = ["<pad>", "</s>", "<unk>"]                  # pad = decoder start = 0


def _corpus(n: int = 400) -> list[str]:
    out = []
    for pair in toy.pairs(n, seed=7, split="train"):
        out += [pair.src, pair.tgt]
    return out


@functools.lru_cache(maxsize=None)
def tokenizer(kind: str = "bpe", *, vocab: int = 120, template: str = "$A </s>",
              extra_specials: tuple[str, ...] = ()):
    """A fast tokenizer trained on toy sentences.

    ``kind``: ``"bpe"`` (Marian-like specials) or ``"unigram"`` (T5-like specials).
    ``template``: the single-sentence post-processor, e.g. ``"$A </s> en_XX"`` (mBART) or
    ``"__en__ $A </s>"`` (M2M100); ``extra_specials`` lists the language codes in it.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = (MARIAN_SPECIALS if kind == "bpe" else T5_SPECIALS) + list(extra_specials)
    if kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials,
                                      show_progress=False)
    else:
        tok = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(vocab_size=vocab, special_tokens=specials,
                                          unk_token="<unk>", show_progress=False)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.train_from_iterator(_corpus(), trainer=trainer)
    named = [t for t in template.split() if t not in ("$A", "$B")]
    tok.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(t, tok.token_to_id(t)) for t in named])
    kwargs = dict(pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                  model_max_length=64, padding_side="right")
    if kind == "bpe":
        kwargs["bos_token"] = "<s>"
    if extra_specials:
        kwargs["additional_special_tokens"] = list(extra_specials)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)


def marian(seed: int = 0, *, max_positions: int = 64) -> Bundle:
    from transformers import MarianConfig, MarianMTModel

    tok = tokenizer("bpe")
    torch.manual_seed(seed)
    config = MarianConfig(
        vocab_size=len(tok), decoder_vocab_size=len(tok), d_model=32, encoder_layers=2,
        decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=max_positions,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.pad_token_id, forced_eos_token_id=tok.eos_token_id,
        share_encoder_decoder_embeddings=True)
    model = MarianMTModel(config).eval()
    gen = model.generation_config
    gen.max_length, gen.num_beams, gen.do_sample = 12, 1, False
    gen.pad_token_id, gen.eos_token_id = tok.pad_token_id, tok.eos_token_id
    gen.decoder_start_token_id = tok.pad_token_id
    gen.bad_words_ids = [[tok.pad_token_id]]
    return Bundle("tiny-marian", model, "hf_marian", tokenizer=tok,
                  meta={"family": "hf_marian", "kind": "hf_seq2seq"})


def t5(seed: int = 0) -> Bundle:
    from transformers import T5Config, T5ForConditionalGeneration

    tok = tokenizer("unigram")
    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=37, num_layers=2,
                      num_heads=4, relative_attention_num_buckets=8,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      decoder_start_token_id=tok.pad_token_id)
    model = T5ForConditionalGeneration(config).eval()
    model.generation_config.max_length = 12
    return Bundle("tiny-t5", model, "hf_t5", tokenizer=tok,
                  meta={"family": "hf_t5", "kind": "hf_seq2seq"})


def held_out(n: int = 4):
    return toy.pairs(n, split="test")
