"""Map sources from the attribution libraries users compare against.

=============  ======================================================================
method         library and what it computes
=============  ======================================================================
``gradcam``    pytorch-grad-cam ``GradCAM`` on the vision tower: ViTs through a reshape
               transform of the patch tokens at the last block's first layer norm
               (``ln_1`` / ``layer_norm1``); CNN towers (open_clip ``ModifiedResNet``,
               timm ConvNeXt) at their last stage.
``ig``         captum ``IntegratedGradients`` from a black image (zero pixels after the
               model's normalisation is undone), ``n_steps`` points.
``saliency``   captum ``Saliency``: the absolute input gradient.
=============  ======================================================================

Each explains the score ``logit_scale * cos(image, text_p)`` of prompt ``p`` with the
image repeated once per prompt. Pixel attributions (``ig``, ``saliency``) are summed
over colour channels (absolute value) and smoothed by a Gaussian of half a patch, then
returned at the model input resolution ``[P, h, w]``; Grad-CAM maps come back at the
input resolution from the library. The libraries are optional dependencies
(``pip install groundroll[attribution]``), imported when a source is first used.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ._model import ModelHandle

__all__ = ["ATTRIBUTION_METHODS", "gradcam_maps", "captum_maps", "gradcam_target_layer"]

ATTRIBUTION_METHODS = ("gradcam", "ig", "saliency")


def _require(module: str, pip_name: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"this map source needs {pip_name}: pip install {pip_name}"
                          f" (or groundroll[attribution])") from err


class _PromptScores(torch.nn.Module):
    """``pixels [B, 3, h, w] -> [B, P]`` logits of each image copy with every prompt."""

    def __init__(self, handle: ModelHandle, text: torch.Tensor):
        super().__init__()
        self.handle = handle
        self.inner = handle.model
        self.register_buffer("text", text, persistent=False)
        self.scale = handle.logit_scale()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.scale * self.handle.image_embeddings(pixels) @ self.text.T


def _check_family(handle: ModelHandle, method: str) -> None:
    if not handle.grounding.relevance:
        raise ValueError(f"method={method!r} explains a CLIP-style image-text score; for"
                         f" {handle.family} use method='cross'")


def gradcam_target_layer(handle: ModelHandle):
    """``(layer, reshape_transform)`` for Grad-CAM on the vision tower.

    ViTs: the last block's first layer norm, with a transform ``[B, N, D] ->
    [B, D, rows, cols]`` that drops the prefix tokens. CNN towers: the last stage, no
    transform.
    """
    find = handle.grounding.gradcam_layer
    if find is None:
        raise ValueError(f"no Grad-CAM layer known for model family {handle.family!r}")
    layer, batch_first = find(handle.model)
    if batch_first is None:                                  # a convolutional stage
        return layer, None
    gh = handle.image_size[0] // handle.patch_size[0]
    gw = handle.image_size[1] // handle.patch_size[1]

    def reshape(t: torch.Tensor) -> torch.Tensor:
        if not batch_first:
            t = t.transpose(0, 1)
        patches = t[:, t.shape[1] - gh * gw:]                # prefix tokens counted
        return patches.reshape(t.shape[0], gh, gw, t.shape[-1]).permute(0, 3, 1, 2)
    return layer, reshape


def gradcam_maps(handle: ModelHandle, image: np.ndarray, prompts: Sequence[str], *,
                 templates: Sequence[str] | None = None, layer=None) -> np.ndarray:
    """Grad-CAM maps ``[P, h, w]`` (float32 in [0, 1]) through pytorch-grad-cam.

    Parameters
    ----------
    handle : ModelHandle
        A CLIP-style model whose vision tower :func:`gradcam_target_layer` knows (ViT,
        ModifiedResNet, timm stages).
    image : ndarray of uint8, shape [h, w, 3]
        At the model's input size.
    prompts : sequence of str
        One map each: the class activation map of the image's logit with that prompt.
    templates : sequence of str, optional
    layer : torch.nn.Module, optional
        Target layer; default :func:`gradcam_target_layer`.

    Examples
    --------
    >>> gradcam_maps(handle, image, ["a red circle"]).shape          # doctest: +SKIP
    (1, 96, 96)
    """
    _check_family(handle, "gradcam")
    cam_module = _require("pytorch_grad_cam", "grad-cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    default_layer, reshape = gradcam_target_layer(handle)
    target_layer = layer if layer is not None else default_layer
    text = handle.text_embeddings(prompts, templates)
    pixels = handle.prompt_copies(image, len(prompts))
    wrapper = _PromptScores(handle, text)
    with handle.float32():     # the lock also keeps other calls off the parameter grads
        try:
            with cam_module.GradCAM(model=wrapper, target_layers=[target_layer],
                                    reshape_transform=reshape) as cam:
                maps = cam(input_tensor=pixels,
                           targets=[ClassifierOutputTarget(p) for p in range(len(prompts))])
        finally:
            # the library back-propagates into parameters
            handle.model.zero_grad(set_to_none=True)
    return np.asarray(maps, dtype=np.float32)


def _smooth(maps: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return maps
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(maps, sigma=(0, sigma, sigma), mode="nearest")


def captum_maps(handle: ModelHandle, image: np.ndarray, prompts: Sequence[str], *,
                method: str = "ig", templates: Sequence[str] | None = None,
                n_steps: int = 32, smooth: float | None = None) -> np.ndarray:
    """Pixel attribution maps ``[P, h, w]`` (float32, >= 0) through captum.

    Parameters
    ----------
    handle : ModelHandle
        A CLIP-style model (any vision tower: attributions are taken at the pixels).
    image : ndarray of uint8, shape [h, w, 3]
        At the model's input size.
    prompts : sequence of str
        One map each, attributing the image's logit with that prompt.
    method : {"ig", "saliency"}
        ``IntegratedGradients`` from a black image or ``Saliency``.
    templates : sequence of str, optional
    n_steps : int
        Integration points of ``ig``.
    smooth : float, optional
        Gaussian sigma in model pixels; default half a patch.

    Examples
    --------
    >>> captum_maps(handle, image, ["a red circle"], method="saliency").shape
    ... # doctest: +SKIP
    (1, 96, 96)
    """
    _check_family(handle, method)
    if method not in ("ig", "saliency"):
        raise ValueError(f"method must be 'ig' or 'saliency', got {method!r}")
    attr = _require("captum.attr", "captum")
    text = handle.text_embeddings(prompts, templates)
    pixels = handle.prompt_copies(image, len(prompts)).requires_grad_(True)
    wrapper = _PromptScores(handle, text)
    targets = list(range(len(prompts)))
    with handle.float32(), torch.enable_grad():
        if method == "ig":
            black = handle.pixels([np.zeros_like(image)]).float().expand_as(pixels)
            out = attr.IntegratedGradients(wrapper).attribute(
                pixels, baselines=black.contiguous(), target=targets,
                n_steps=int(n_steps), internal_batch_size=max(len(prompts), 1) * 8)
        else:
            out = attr.Saliency(wrapper).attribute(pixels, target=targets, abs=True)
    maps = out.detach().float().sum(1).abs().cpu().numpy()
    sigma = 0.5 * min(handle.patch_size) if smooth is None else float(smooth)
    return _smooth(maps, sigma).astype(np.float32)
