"""Token metadata read from a module's call arguments.

A reader gets the :class:`~groundroll.families.sites.TokenSource`, the module, its call
arguments and the trace being filled, and returns ``{stream name: Tokens}``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..trace import Tokens
from ..families.sites import TokenSource

__all__ = ["READERS", "read_tokens"]

# reader(source, module, args, kwargs, session) -> {stream: Tokens}; session has .trace
# and .tokenizer.
Reader = Callable[[TokenSource, torch.nn.Module, tuple, dict, Any], dict]


def _arg(args: tuple, kwargs: dict, names: tuple[str, ...], position: int = 0):
    for name in names:
        if kwargs.get(name) is not None:
            return kwargs[name]
    return args[position] if len(args) > position else None


def _first(ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return torch.zeros(ids.shape[0], dtype=torch.long, device=ids.device)


def _last_real(ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return torch.full((ids.shape[0],), ids.shape[1] - 1, dtype=torch.long,
                          device=ids.device)
    # Last True position (right or left padding alike).
    positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
    return torch.where(mask, positions, -1).max(-1).values


def _last(ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return torch.full((ids.shape[0],), ids.shape[1] - 1, dtype=torch.long, device=ids.device)


def _argmax(ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return ids.argmax(-1)


#: Special-position rules: name -> (key in Tokens.special, function of ids and mask).
SPECIAL: dict[str, tuple[str, Callable]] = {
    "cls@first": ("cls", _first),
    "bos@first": ("bos", _first),
    "eos@last": ("eos", _last_real),
    "eot@last": ("eot", _last),
    "eot@argmax": ("eot", _argmax),
    "eot@first": ("eot", _first),
    "eot@last_real": ("eot", _last_real),
}


def _hf_clip_eot(module: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    # Same rule as transformers' CLIPTextTransformer pooling.
    eos = getattr(module, "eos_token_id", None)
    if eos is None:
        eos = getattr(getattr(module, "config", None), "eos_token_id", None)
    if eos is None or eos == 2:
        return ids.argmax(-1)
    return (ids == eos).int().argmax(-1)


def _text(source, module, args, kwargs, session) -> dict:
    ids = _arg(args, kwargs, ("input_ids", "text"))
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
        return {}
    mask = kwargs.get("attention_mask")
    if mask is not None and mask.dim() == 2:
        mask = mask.bool()
    elif source.pad_id is not None:
        mask = ids != source.pad_id
    else:
        mask = None
    special = {}
    for rule in source.special:
        if rule == "eot@hf_clip":
            special["eot"] = _hf_clip_eot(module, ids)
        elif rule == "cls@appended":
            continue
        else:
            key, fn = SPECIAL[rule]
            special[key] = fn(ids, mask)
    length = ids.shape[1]
    if "cls@appended" in source.special:
        # A class token is appended after the ids (open_clip CoCa text tower); it is real.
        length += 1
        special["cls"] = torch.full((ids.shape[0],), ids.shape[1], dtype=torch.long,
                                    device=ids.device)
        if mask is not None:
            mask = torch.cat([mask, mask.new_ones(ids.shape[0], 1)], 1)
    if mask is not None and bool(mask.all()):
        mask = None
    strings = None
    tokenizer = session.tokenizer
    if tokenizer is not None:
        strings = [tokenizer.convert_ids_to_tokens(row.tolist())
                   if hasattr(tokenizer, "convert_ids_to_tokens")
                   else [tokenizer.decode([i]) for i in row.tolist()]
                   for row in ids]
    return {source.stream: Tokens(length=length, ids=ids.detach(), strings=strings,
                                  special=special, mask=mask, causal=source.causal)}


def _patch_size(module: torch.nn.Module) -> tuple[int, int]:
    size = getattr(module, "patch_size", None)
    if size is None:
        size = getattr(getattr(module, "config", None), "patch_size", None)
    if size is None:
        raise ValueError(f"cannot find the patch size of {type(module).__name__}")
    return (size, size) if isinstance(size, int) else tuple(size)


def _image(source, module, args, kwargs, session) -> dict:
    pixels = _arg(args, kwargs, ("pixel_values", "image", "x"))
    if not isinstance(pixels, torch.Tensor) or pixels.dim() != 4:
        return {}
    ph, pw = _patch_size(module)
    rows, cols = pixels.shape[-2] // ph, pixels.shape[-1] // pw
    special = {"cls": torch.zeros(pixels.shape[0], dtype=torch.long)} if source.prefix else {}
    return {source.stream: Tokens(length=source.prefix + rows * cols, special=special,
                                  grid=(rows, cols), prefix=source.prefix)}


def _queries(source, module, args, kwargs, session) -> dict:
    # Learned queries of an attention pooler (open_clip AttentionalPooler, SigLIP head).
    # timm AttentionPoolLatent keeps them in ``latent`` [1, queries, dim].
    query = getattr(module, "query", None)
    if query is not None:
        length = query.shape[0]
    elif getattr(module, "latent", None) is not None:
        length = module.latent.shape[1]
    else:
        length = module.probe.shape[1]
    return {source.stream: Tokens(length=length)}


def _coca_decoder(source, module, args, kwargs, session) -> dict:
    # MultimodalTransformer.forward(image_embs, text_embs): text_embs are the caption
    # tokens fed to the decoder, image_embs the attentional pooler's output tokens.
    image_embs = _arg(args, kwargs, ("image_embs",), 0)
    text_embs = _arg(args, kwargs, ("text_embs",), 1)
    length = text_embs.shape[1]
    text = session.trace.tokens.get("text")
    ids = text.ids[:, :length] if text is not None and text.ids is not None else None
    mask = None
    if ids is not None and source.pad_id is not None and not bool((ids != source.pad_id).all()):
        mask = ids != source.pad_id
    out = {source.stream: Tokens(length=length, ids=ids, mask=mask, causal=True),
           "pool_out": Tokens(length=image_embs.shape[1])}
    queries = session.trace.tokens.get("pool_queries")
    if queries is not None:
        # pool_out token j is pooler query j + prefix (the first query is pooled apart).
        queries.prefix = queries.length - image_embs.shape[1]
        if queries.prefix:
            queries.special["cls"] = torch.zeros(image_embs.shape[0], dtype=torch.long)
    return out


def _hf_patch_size(module: torch.nn.Module):
    config = getattr(module, "config", None)
    for cfg in (config, getattr(config, "vision_config", None)):
        size = getattr(cfg, "patch_size", None)
        if size is not None:
            return (size, size) if isinstance(size, int) else tuple(size)
    return None


def _hf_auto(source, module, args, kwargs, session) -> dict:
    """Whatever a Hugging Face tower's call says: ids and padding mask of text, the patch
    grid of images (prefix tokens are counted from the first layer). Other inputs
    (audio features, embeddings) leave the stream to be sized by its first layer."""
    ids = kwargs.get("input_ids", args[0] if args and isinstance(args[0], torch.Tensor)
                     and not args[0].is_floating_point() else None)
    if isinstance(ids, torch.Tensor) and ids.dim() == 2 and not ids.is_floating_point():
        mask = kwargs.get("attention_mask")
        mask = mask.bool() if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None
        if mask is not None and (mask.shape != ids.shape or bool(mask.all())):
            # all real, or a mask over more than the ids (InstructBLIP's Q-Former: its
            # query embeddings come first): the stream is sized by its first layer
            if mask.shape != ids.shape:
                return {}
            mask = None
        special = {"bos": _first(ids, mask), "eos": _last_real(ids, mask)}
        strings = None
        if session.tokenizer is not None and hasattr(session.tokenizer, "convert_ids_to_tokens"):
            strings = [session.tokenizer.convert_ids_to_tokens(row.tolist()) for row in ids]
        return {source.stream: Tokens(length=ids.shape[1], ids=ids.detach(), strings=strings,
                                      special=special, mask=mask)}
    pixels = kwargs.get("pixel_values", args[0] if args else None)
    shapes = kwargs.get("spatial_shapes")
    if isinstance(pixels, torch.Tensor) and isinstance(shapes, torch.Tensor):
        # NaFlex (SigLIP2): flattened patches, each image's grid given beside them.
        if not bool((shapes == shapes[:1]).all()):
            raise ValueError("images of one batch have different patch grids"
                             f" {shapes.tolist()}; capture them one grid at a time")
        rows, cols = (int(v) for v in shapes[0])
        mask = kwargs.get("attention_mask", kwargs.get("pixel_attention_mask"))
        mask = mask.bool() if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None
        if mask is not None and bool(mask.all()):
            mask = None
        return {source.stream: Tokens(length=pixels.shape[1], grid=(rows, cols), prefix=0,
                                      mask=mask)}
    if isinstance(pixels, torch.Tensor) and pixels.dim() == 4:
        size = _hf_patch_size(module)
        if size is None:
            return {}
        rows, cols = pixels.shape[-2] // size[0], pixels.shape[-1] // size[1]
        # length 0 until the first layer recounts it with the prefix tokens
        return {source.stream: Tokens(length=0, grid=(rows, cols), prefix=0)}
    return {}


def _timm_image(source, module, args, kwargs, session) -> dict:
    """A timm ViT trunk (open_clip ``TimmModel``): patch size from ``patch_embed``,
    prefix tokens (class, registers) from ``num_prefix_tokens``."""
    pixels = _arg(args, kwargs, ("x", "image", "pixel_values"))
    if not isinstance(pixels, torch.Tensor) or pixels.dim() != 4:
        return {}
    trunk = getattr(module, "trunk", module)
    ph, pw = _pair(trunk.patch_embed.patch_size)
    rows, cols = pixels.shape[-2] // ph, pixels.shape[-1] // pw
    prefix = int(getattr(trunk, "num_prefix_tokens", 0) or 0)
    special = {"cls": torch.zeros(pixels.shape[0], dtype=torch.long)} if prefix else {}
    return {source.stream: Tokens(length=prefix + rows * cols, special=special,
                                  grid=(rows, cols), prefix=prefix)}


def _pair(size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else tuple(int(s) for s in size)


#: Token readers by name.
READERS: dict[str, Reader] = {
    "hf_auto": _hf_auto,
    "timm_image": _timm_image,
    "text": _text,
    "image": _image,
    "queries": _queries,
    "coca_decoder": _coca_decoder,
}


def read_tokens(source: TokenSource, module, args, kwargs, session) -> None:
    """Run ``source``'s reader and store its token streams in ``session.trace.tokens``."""
    session.trace.tokens.update(READERS[source.reader](source, module, args, kwargs, session))
