"""Tiny random-initialised models of every supported family, for tests.

Every factory builds a stock model class (open_clip or Hugging Face transformers) from a
small config: 2 layers, width 32, 4 heads, vocabulary 64, images 32 x 32 pixels with
8 x 8 patches. Nothing is downloaded. Weights depend only on ``seed``; the model is
returned in ``eval()`` mode.

Each factory returns a :class:`TinyModel`: the model, example inputs (a dict of keyword
arguments for ``model(**inputs)``), a ``score`` function turning the model's output into a
scalar to back-propagate, and the ``streams`` that a capture of that call must fill.

Use :func:`build` with a name from :data:`FAMILIES`::

    tiny = build("bert")
    with capture(tiny.model) as trace:
        out = tiny.model(**tiny.inputs)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

__all__ = ["TinyModel", "word_tokenizer", "FAMILIES", "OPEN_CLIP_FAMILIES", "HF_FAMILIES", "build",
           "text_ids", "image_batch", "VOCAB", "WIDTH", "HEADS", "LAYERS", "IMAGE", "PATCH",
           "CONTEXT", "BATCH"]

VOCAB = 64
WIDTH = 32
HEADS = 4
LAYERS = 2
IMAGE = 32
PATCH = 8
CONTEXT = 12
BATCH = 2


@dataclass
class TinyModel:
    """A tiny model with inputs and a scalar score for gradient tests."""

    name: str
    model: torch.nn.Module
    inputs: dict[str, Any]
    score: Callable[[Any], torch.Tensor]
    streams: tuple[str, ...]
    # Name of the token stream whose padding is exercised by padded-batch tests, if any.
    text_stream: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __call__(self, **overrides: Any) -> Any:
        return self.model(**{**self.inputs, **overrides})


def text_ids(batch: int = BATCH, length: int = CONTEXT, *, low: int = 3, high: int = VOCAB - 2,
             seed: int = 1) -> torch.Tensor:
    """``[batch, length]`` random token ids in ``[low, high)``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, (batch, length), generator=generator)


def image_batch(batch: int = BATCH, height: int = IMAGE, width: int = IMAGE, *,
                seed: int = 2) -> torch.Tensor:
    """``[batch, 3, height, width]`` random pixels."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, height, width, generator=generator)


def _clip_text(batch: int = BATCH) -> torch.Tensor:
    # open_clip text: [SOT] words [EOT] 0 0 ...; EOT has the largest id (argmax pooling).
    ids = torch.zeros(batch, CONTEXT, dtype=torch.long)
    words = text_ids(batch, CONTEXT, low=2, high=VOCAB - 2)
    for b in range(batch):
        n = 5 + 2 * b
        ids[b, 0] = 1
        ids[b, 1:n - 1] = words[b, 1:n - 1]
        ids[b, n - 1] = VOCAB - 1
    return ids


# --------------------------------------------------------------------------- open_clip

def open_clip_clip(seed: int = 0, *, image_size: int | tuple[int, int] = IMAGE) -> TinyModel:
    """``open_clip.CLIP`` with a ViT vision tower and a causal text tower."""
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.CLIP(
        embed_dim=16,
        vision_cfg=dict(image_size=image_size, patch_size=PATCH, width=WIDTH, layers=LAYERS,
                        head_width=WIDTH // HEADS, mlp_ratio=2.0),
        text_cfg=dict(context_length=CONTEXT, vocab_size=VOCAB, width=WIDTH, heads=HEADS,
                      layers=LAYERS, mlp_ratio=2.0),
    ).eval()
    size = (image_size, image_size) if isinstance(image_size, int) else image_size
    inputs = dict(image=image_batch(BATCH, *size), text=_clip_text())

    def score(out):
        image, text, scale = out[:3]
        return (scale * image @ text.T).diagonal().sum()

    return TinyModel("open_clip", model, inputs, score, ("vision", "text"), "text")


def open_clip_coca(seed: int = 0) -> TinyModel:
    """``open_clip.CoCa``: ViT with attentional pooler, text tower with appended class
    token, and a multimodal decoder with cross-attention."""
    import open_clip

    torch.manual_seed(seed)
    text_cfg = dict(context_length=CONTEXT, vocab_size=VOCAB, width=WIDTH, heads=HEADS,
                    layers=LAYERS, mlp_ratio=2.0, embed_cls=True, output_tokens=True)
    model = open_clip.CoCa(
        embed_dim=WIDTH,
        multimodal_cfg=dict(context_length=CONTEXT, vocab_size=VOCAB, width=WIDTH,
                            heads=HEADS, layers=LAYERS, mlp_ratio=2.0, attn_pooler_heads=HEADS),
        text_cfg=text_cfg,
        vision_cfg=dict(image_size=IMAGE, patch_size=PATCH, width=WIDTH, layers=LAYERS,
                        head_width=WIDTH // HEADS, mlp_ratio=2.0, attentional_pool=True,
                        attn_pooler_queries=6, attn_pooler_heads=HEADS, output_tokens=True),
    ).eval()
    # open_clip leaves the decoder's projection uninitialised (torch.empty) until weights load.
    torch.nn.init.normal_(model.text_decoder.text_projection, std=WIDTH ** -0.5)
    inputs = dict(image=image_batch(), text=_clip_text())

    def score(out):
        return out["logits"].log_softmax(-1)[..., 5].sum() + (
            out["image_features"] * out["text_features"]).sum()

    return TinyModel("open_clip_coca", model, inputs, score,
                     ("vision", "text", "pool", "decoder", "decoder_cross"))


# --------------------------------------------------------------------------- HF

def _hf_text(batch: int = BATCH, length: int = 9, *, pad: int = 0, bos: int | None = None,
             eos: int = 2, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and mask: example b has ``length - 2 * b`` real tokens."""
    ids = text_ids(batch, length, low=4, high=VOCAB - 1, seed=seed)
    mask = torch.ones(batch, length, dtype=torch.long)
    for b in range(batch):
        n = length - 2 * b
        if bos is not None:
            ids[b, 0] = bos
        ids[b, n - 1] = eos
        ids[b, n:] = pad
        mask[b, n:] = 0
    return ids, mask


def _encoder_text(config_cls, model_cls, *, pad: int = 0, bos: int = 1, eos: int = 2, **kw):
    def factory(seed: int = 0) -> TinyModel:
        torch.manual_seed(seed)
        config = config_cls(vocab_size=VOCAB, hidden_size=WIDTH, num_hidden_layers=LAYERS,
                            num_attention_heads=HEADS, intermediate_size=37,
                            max_position_embeddings=64, pad_token_id=pad, **kw)
        model = model_cls(config).eval()
        ids, mask = _hf_text(pad=pad, bos=bos, eos=eos)
        return TinyModel(config.model_type, model, dict(input_ids=ids, attention_mask=mask),
                         lambda out: out.last_hidden_state[:, 0].pow(2).sum(), ("encoder",),
                         "encoder")
    return factory


def _vision(config_cls, model_cls, **kw):
    def factory(seed: int = 0) -> TinyModel:
        torch.manual_seed(seed)
        config = config_cls(image_size=IMAGE, patch_size=PATCH, num_channels=3,
                            hidden_size=WIDTH, num_hidden_layers=LAYERS,
                            num_attention_heads=HEADS, intermediate_size=37, **kw)
        model = model_cls(config).eval()
        return TinyModel(config.model_type, model, dict(pixel_values=image_batch()),
                         lambda out: out.last_hidden_state[:, 0].pow(2).sum(), ("encoder",))
    return factory


def _seq2seq(config_cls, model_cls, *, pad: int = 1, bos: int = 0, eos: int = 2,
             decoder_start: int = 2, **kw):
    def factory(seed: int = 0) -> TinyModel:
        torch.manual_seed(seed)
        config = config_cls(vocab_size=VOCAB, d_model=WIDTH, encoder_layers=LAYERS,
                            decoder_layers=LAYERS, encoder_attention_heads=HEADS,
                            decoder_attention_heads=HEADS, encoder_ffn_dim=37,
                            decoder_ffn_dim=37, max_position_embeddings=64,
                            pad_token_id=pad, bos_token_id=bos, eos_token_id=eos,
                            decoder_start_token_id=decoder_start, **kw)
        model = model_cls(config).eval()
        ids, mask = _hf_text(pad=pad, eos=eos)
        dec, dec_mask = _hf_text(length=7, pad=pad, eos=eos, seed=5)
        dec[:, 0] = decoder_start
        inputs = dict(input_ids=ids, attention_mask=mask, decoder_input_ids=dec,
                      decoder_attention_mask=dec_mask)
        return TinyModel(config.model_type, model, inputs,
                         lambda out: out.logits.log_softmax(-1)[..., 7].sum(),
                         ("encoder", "decoder", "cross"), "encoder")
    return factory


def t5(seed: int = 0) -> TinyModel:
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    config = T5Config(vocab_size=VOCAB, d_model=WIDTH, d_kv=8, d_ff=37, num_layers=LAYERS,
                      num_heads=HEADS, relative_attention_num_buckets=8, pad_token_id=0,
                      eos_token_id=1, decoder_start_token_id=0)
    model = T5ForConditionalGeneration(config).eval()
    ids, mask = _hf_text(pad=0, eos=1)
    dec, dec_mask = _hf_text(length=7, pad=0, eos=1, seed=5)
    dec[:, 0] = 0
    inputs = dict(input_ids=ids, attention_mask=mask, decoder_input_ids=dec,
                  decoder_attention_mask=dec_mask)
    return TinyModel("t5", model, inputs, lambda out: out.logits.log_softmax(-1)[..., 7].sum(),
                     ("encoder", "decoder", "cross"), "encoder")


def _towers(text: dict, vision: dict) -> tuple[dict, dict]:
    text = dict(vocab_size=VOCAB, hidden_size=WIDTH, num_hidden_layers=LAYERS,
                num_attention_heads=HEADS, intermediate_size=37, max_position_embeddings=CONTEXT,
                **text)
    vision = dict(image_size=IMAGE, patch_size=PATCH, hidden_size=WIDTH,
                  num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=37,
                  **vision)
    return text, vision


def _contrastive_score(out):
    return out.logits_per_image.diagonal().sum()


def hf_clip(seed: int = 0) -> TinyModel:
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    text, vision = _towers(dict(bos_token_id=VOCAB - 2, eos_token_id=VOCAB - 1, pad_token_id=0),
                           {})
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision,
                                 projection_dim=16)).eval()
    ids, mask = _hf_text(length=CONTEXT, pad=0, bos=VOCAB - 2, eos=VOCAB - 1)
    inputs = dict(input_ids=ids, attention_mask=mask, pixel_values=image_batch())
    return TinyModel("clip", model, inputs, _contrastive_score, ("vision", "text"), "text")


def hf_siglip(seed: int = 0) -> TinyModel:
    from transformers import SiglipConfig, SiglipModel

    torch.manual_seed(seed)
    text, vision = _towers(dict(pad_token_id=1, eos_token_id=2), {})
    model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).eval()
    ids = text_ids(BATCH, CONTEXT, low=3, high=VOCAB)
    inputs = dict(input_ids=ids, pixel_values=image_batch())
    return TinyModel("siglip", model, inputs, _contrastive_score, ("vision", "text", "pool"))


def hf_blip(seed: int = 0) -> TinyModel:
    from transformers import BlipConfig, BlipForImageTextRetrieval

    torch.manual_seed(seed)
    text, vision = _towers(dict(pad_token_id=0, bos_token_id=1, sep_token_id=2,
                                encoder_hidden_size=WIDTH), {})
    text["max_position_embeddings"] = 64
    model = BlipForImageTextRetrieval(BlipConfig(text_config=text, vision_config=vision,
                                                 projection_dim=16)).eval()
    ids, mask = _hf_text(length=CONTEXT, pad=0, bos=1, eos=2)
    inputs = dict(input_ids=ids, attention_mask=mask, pixel_values=image_batch())
    return TinyModel("blip", model, inputs, lambda out: out.itm_score[:, 1].sum(),
                     ("vision", "text", "text_cross"), "text")


def _lazy(module: str, config: str, model: str, kind: Callable, **kw):
    def factory(seed: int = 0) -> TinyModel:
        import importlib

        lib = importlib.import_module(module)
        return kind(getattr(lib, config), getattr(lib, model), **kw)(seed)
    return factory


OPEN_CLIP_FAMILIES: dict[str, Callable[..., TinyModel]] = {
    "open_clip": open_clip_clip,
    "open_clip_coca": open_clip_coca,
}

HF_FAMILIES: dict[str, Callable[..., TinyModel]] = {
    "clip": hf_clip,
    "siglip": hf_siglip,
    "blip": hf_blip,
    "marian": _lazy("transformers", "MarianConfig", "MarianMTModel", _seq2seq,
                    pad=1, decoder_start=1),
    "bart": _lazy("transformers", "BartConfig", "BartForConditionalGeneration", _seq2seq),
    "mbart": _lazy("transformers", "MBartConfig", "MBartForConditionalGeneration", _seq2seq),
    "m2m_100": _lazy("transformers", "M2M100Config", "M2M100ForConditionalGeneration",
                     _seq2seq),
    "pegasus": _lazy("transformers", "PegasusConfig", "PegasusForConditionalGeneration",
                     _seq2seq, pad=0, eos=1, decoder_start=0),
    "t5": t5,
    "bert": _lazy("transformers", "BertConfig", "BertModel", _encoder_text,
                  pad=0, bos=1, eos=2),
    "roberta": _lazy("transformers", "RobertaConfig", "RobertaModel", _encoder_text,
                     pad=1, bos=0, eos=2),
    "vit": _lazy("transformers", "ViTConfig", "ViTModel", _vision),
    "deit": _lazy("transformers", "DeiTConfig", "DeiTModel", _vision),
}

FAMILIES: dict[str, Callable[..., TinyModel]] = {**OPEN_CLIP_FAMILIES, **HF_FAMILIES}


def build(name: str, seed: int = 0) -> TinyModel:
    """Build the tiny model of family ``name`` (a key of :data:`FAMILIES`)."""
    try:
        factory = FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown tiny family {name!r}; known: {sorted(FAMILIES)}") from None
    return factory(seed)


def word_tokenizer(words):
    """A Hugging Face fast tokenizer over ``words`` (ids in list order; ``[PAD]``,
    ``[BOS]``, ``[EOS]`` and ``[UNK]`` among them), splitting on whitespace."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]",
        unk_token="[UNK]")
