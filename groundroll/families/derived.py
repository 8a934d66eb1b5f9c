"""Records derived for Hugging Face models no built-in family names: capture sites from
the model's own declarations (:mod:`groundroll.families.derive`), a loader its config
suggests, and CLIP-style grounding for dual encoders (text and image features)."""

from __future__ import annotations

import inspect

import torch

from . import _hf
from .derive import derive_adapter
from .record import Family, Grounding, HFLoader, _features, model_type

__all__ = ["derived_family", "derived_grounding", "derived_loader"]


# NaFlex towers (SigLIP2): the image goes in as flattened patches with their grid.
def _naflex_inputs(model, pixels):
    patch = _hf.vision_config(model).patch_size
    b, c, h, w = pixels.shape
    rows, cols = h // patch, w // patch
    x = pixels[:, :, :rows * patch, :cols * patch]
    x = x.reshape(b, c, rows, patch, cols, patch).permute(0, 2, 4, 3, 5, 1)
    x = x.reshape(b, rows * cols, patch * patch * c)
    return dict(pixel_values=x,
                pixel_attention_mask=torch.ones(b, rows * cols, dtype=torch.long,
                                                device=pixels.device),
                spatial_shapes=torch.tensor([[rows, cols]] * b, device=pixels.device))


def _naflex_image(model, pixels):
    return _features(model.get_image_features(**_naflex_inputs(model, pixels)))


def _naflex_size(model):
    side = int(round(_hf.vision_config(model).num_patches ** 0.5))
    patch = _hf.vision_config(model).patch_size
    return (side * patch, side * patch)


def derived_grounding(model) -> Grounding | None:
    """CLIP-style grounding for a derived dual encoder (text and image features)."""
    if not (hasattr(model, "get_text_features") and hasattr(model, "get_image_features")):
        return None
    adapter = derive_adapter(model)
    if adapter is None or "vision" not in adapter.streams:
        return None
    pool = "pool" in adapter.streams
    naflex = "spatial_shapes" in inspect.signature(model.get_image_features).parameters
    return Grounding(
        image_size=_naflex_size if naflex else _hf.image_size, patch_size=_hf.patch_size,
        mean_std=_hf.mean_std(_hf.SIGLIP_MEAN_STD if pool else _hf.OPENAI_MEAN_STD),
        context_length=_hf.context_length, text_embeddings=_hf.text_features,
        image_embeddings=_naflex_image if naflex else _hf.image_features,
        vision_target="pool_queries" if pool else "vision",
        vision_streams=("vision", "pool") if pool else ("vision",), pad_to_max=pool,
        gradcam_layer=_hf.gradcam_layer)


def derived_family(model) -> Family | None:
    """A record for a Hugging Face model with declared attention, named
    ``hf_<model_type>``; None for other models."""
    kind = model_type(model)
    if kind is None:
        return None
    adapter = derive_adapter(model)
    if adapter is None:
        return None
    config = model.config
    if getattr(config, "is_encoder_decoder", False):
        loader = HFLoader("AutoModelForSeq2SeqLM", "tokenizer", "hf_seq2seq")
    elif hasattr(config, "vision_config") and hasattr(config, "text_config"):
        loader = HFLoader("AutoModel", "processor", "hf_dual")
    elif getattr(model, "main_input_name", "") == "pixel_values":
        loader = HFLoader("AutoModel", "image_processor", "hf_encoder")
    else:
        loader = HFLoader("AutoModel", "tokenizer", "hf_encoder")
    return Family(f"hf_{kind}", matches=lambda m, t=kind: model_type(m) == t,
                  adapter=None, chains=adapter.chains, grounding=derived_grounding(model),
                  loader=loader, model_types=(kind,))


def derived_loader(config) -> HFLoader:
    """The loader a Hugging Face config of no registered family suggests."""
    if getattr(config, "is_encoder_decoder", False):
        return HFLoader("AutoModelForSeq2SeqLM", "tokenizer", "hf_seq2seq")
    if hasattr(config, "vision_config") and hasattr(config, "text_config"):
        return HFLoader("AutoModel", "processor", "hf_dual")
    if hasattr(config, "image_size") and hasattr(config, "patch_size"):
        return HFLoader("AutoModel", "image_processor", "hf_encoder")
    return HFLoader("AutoModel", "tokenizer", "hf_encoder")
