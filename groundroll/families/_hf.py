"""What Hugging Face image-text towers share: sizes, normalisation, text context,
feature calls and the Grad-CAM layer. The family modules build their records from
these."""

from __future__ import annotations

import torch

from .record import OPENAI_MEAN, OPENAI_STD, _features, _pair

__all__ = ["vision_config", "image_size", "patch_size", "mean_std", "context_length",
           "text_features", "image_features", "gradcam_layer", "SIGLIP_MEAN_STD",
           "OPENAI_MEAN_STD", "fixed_sdpa_attention", "class_token_grid"]

OPENAI_MEAN_STD = (OPENAI_MEAN, OPENAI_STD)
SIGLIP_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
#: torchvision's ImageNet statistics (InternViT).
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def fixed_sdpa_attention(model: torch.nn.Module) -> list[str]:
    """Class names of attention modules that transformers chose as SDPA when the model
    was built and that cannot switch to eager afterwards (older modelling files such as
    Data2VecVision's pick ``*SdpaSelfAttention`` classes at construction and return no
    weights); empty when the model has none.

    Such a model must be loaded with ``attn_implementation="eager"`` for its attention
    to be read.
    """
    return sorted({type(m).__name__ for m in model.modules()
                   if "Sdpa" in type(m).__name__ and "Attention" in type(m).__name__})


def class_token_grid(n_tokens: int, size, patch, what: str) -> tuple[int, tuple[int, int]]:
    """``(1, (rows, cols))`` for ``n_tokens`` image tokens that are a class token then a
    ``size / patch`` grid of patches; ValueError naming ``what`` (the tokens' reader)
    when they are not, since they cannot be mapped back to pixels then."""
    rows, cols = size[0] // patch[0], size[1] // patch[1]
    if n_tokens != rows * cols + 1:
        raise ValueError(f"{what} {n_tokens} image tokens, not a class token and its"
                         f" {rows} x {cols} patches: they cannot be mapped back to pixels")
    return 1, (rows, cols)


def vision_config(model):
    config = model.config
    return getattr(config, "vision_config", config)


def image_size(model):
    return _pair(vision_config(model).image_size)


def patch_size(model):
    return _pair(vision_config(model).patch_size)


def mean_std(default):
    """The processor's mean and std when there is a processor, else ``default``."""
    def read(model, processor):
        if processor is not None:
            return processor.image_mean, processor.image_std
        return default
    return read


def context_length(model, tokenizer):
    limit = int(model.config.text_config.max_position_embeddings)
    tok_limit = getattr(tokenizer, "model_max_length", None)
    return min(limit, int(tok_limit)) if tok_limit and tok_limit < 10**6 else limit


def text_features(model, enc):
    return _features(model.get_text_features(**enc))


def image_features(model, pixels):
    return _features(model.get_image_features(pixel_values=pixels))


def gradcam_layer(model) -> tuple[torch.nn.Module, bool]:
    """The last vision block's first layer norm (``[batch, N, D]``)."""
    return model.vision_model.encoder.layers[-1].layer_norm1, True
