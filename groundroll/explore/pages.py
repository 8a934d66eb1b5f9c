"""Pages that run a pipeline first: the model is run for every variant or layer the page
switches between, then the report layer renders the results.

:func:`explore_segmentation` segments an image and adds per-layer maps of one prompt
(:func:`layer_maps`); :func:`explore_alignment` aligns sentence pairs with every method,
layer, head and shift of a translation model.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from groundroll import masks as M
from groundroll.adapters import capture
from groundroll.alignment.api import METHODS, _bundle, _matrices
from groundroll.alignment.api import align as run_align
from groundroll.alignment.extract import EXTRACTIONS
from groundroll.grounding import load_image, resolve_model, segment
from groundroll.grounding._model import DEFAULT_MODEL
from groundroll.report._page import DEFAULT_MAX_BYTES
from groundroll.report.alignment import _html, _rounded, alignment_variants
from groundroll.report.segmentation import (DEFAULT_MAX_SIDE, _resize, _shrink_hw,
                                            segmentation_report)
from groundroll.rollout import gradient_weighted, relevance_self_update, rollout

__all__ = ["explore_alignment", "explore_segmentation", "layer_maps", "LAYER_METHODS"]

LAYER_METHODS = ("relevance", "rollout")


def _letterboxed(handle, rgb):

    geometry = M.letterbox_geometry(rgb.shape[:2], handle.image_size, mode="pad")
    return M.letterbox_image(rgb, geometry, fill=0), geometry


def layer_maps(image, prompt: str, *, model=DEFAULT_MODEL,
               method: str = "relevance", max_side: int = 1024):
    """Maps of one prompt read after each vision layer of a CLIP model.

    ``relevance``: Chefer et al.'s relevance at the class token for the image-prompt
    logit, accumulated through layers ``0..l`` (``R <- R + Ā R``). ``rollout``: attention
    rollout through layers ``0..l`` (prompt-independent). The last map is the full
    model's.

    Parameters
    ----------
    image : str, PathLike, PIL.Image or ndarray
    prompt : str
    model : Bundle or str
        An open_clip or Hugging Face CLIP model (default ``bundled:shapes-clip``).
    method : {"relevance", "rollout"}
    max_side : int
        Images are downscaled to this long side first.

    Returns
    -------
    ndarray of float32, shape [L, H, W]
        One map per layer at the (working) image's pixels, each min-max normalised to
        [0, 1].

    Examples
    --------
    >>> maps = layer_maps("scene.png", "red circle")          # doctest: +SKIP
    >>> maps.shape                                            # doctest: +SKIP
    (4, 256, 256)
    """
    if method not in LAYER_METHODS:
        raise ValueError(f"method must be one of {LAYER_METHODS}, got {method!r}")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("layer_maps needs one non-empty prompt")
    handle = resolve_model(model)
    if not handle.grounding.layer_maps:
        raise ValueError(f"per-layer maps read a CLIP vision tower; model family"
                         f" {handle.family!r} is not one")
    rgb = load_image(image)
    hw = _shrink_hw(rgb.shape[:2], max_side)
    rgb = _resize(rgb, hw)
    model_input, geometry = _letterboxed(handle, rgb)
    net = handle.model
    if method == "relevance":
        text = handle.text_embeddings([prompt]).float()
        pixels = handle.pixels([model_input]).float().requires_grad_(True)
        # The score is the image-prompt logit, as in groundroll.grounding's relevance.
        with handle.float32(), torch.enable_grad(), capture(net, grads=True,
                                                            streams=["vision"]) as trace:
            emb = handle.image_embeddings(pixels).float()
            logit = handle.logit_scale() * (emb * text).sum()
            torch.autograd.grad(logit, pixels)
        weights, grads = trace.weights("vision"), trace.grads("vision")
        n = weights[0].shape[-1]
        R = torch.eye(n, dtype=torch.float32).unsqueeze(0)
        rows = []
        for a, g in zip(weights, grads):
            R = relevance_self_update(R, gradient_weighted(a.detach().float(), g.float()))
            rows.append(R[:, 0].clone())                     # [batch, N] at CLS
    else:
        with torch.no_grad(), capture(net, streams=["vision"]) as trace:
            handle.image_embeddings(handle.pixels([model_input]))
        weights = [w.float() for w in trace.weights("vision")]
        rows = [rollout(weights[: l + 1], rows=[0])[:, 0] for l in range(len(weights))]
    tokens = trace.tokens["vision"]
    gh, gw = tokens.grid
    grids = np.stack([r[0, tokens.patches].reshape(gh, gw).detach().cpu().numpy()
                      for r in rows]).astype(np.float32)
    maps = M.unletterbox(grids, geometry, order=1).astype(np.float32)
    lo = maps.reshape(len(maps), -1).min(1)[:, None, None]
    hi = maps.reshape(len(maps), -1).max(1)[:, None, None]
    return np.where(hi > lo, (maps - lo) / np.where(hi > lo, hi - lo, 1), 0).astype(np.float32)


def explore_segmentation(image, prompts: Sequence[str], *, model=DEFAULT_MODEL,
                         method: str | None = None, layer_prompt: int | str | None = 0,
                         layer_method: str | None = None, title: str | None = None,
                         max_side: int = DEFAULT_MAX_SIDE, max_bytes: int = DEFAULT_MAX_BYTES,
                         **segment_options) -> str:
    """Segment an image and show the result with per-layer maps of one prompt.

    Parameters
    ----------
    image : str, PathLike, PIL.Image or ndarray
    prompts : sequence of str
    model : Bundle or str
    method : str, optional
        Map source of :func:`groundroll.segment` (default: the model profile's).
    layer_prompt : int or str, optional
        The prompt (index or text) whose per-layer maps are shown; None: none.
    layer_method : {"relevance", "rollout"}, optional
        Default: ``"rollout"`` when ``method="rollout"``, else ``"relevance"``.
    title, max_side, max_bytes
        As in :func:`segmentation_report`.
    **segment_options
        Passed to :func:`groundroll.segment` (``mask_threshold``, ``refine``, ...).

    Returns
    -------
    str
        The page of :func:`segmentation_report`, with the per-layer maps.

    Examples
    --------
    >>> html = explore_segmentation("scene.png", ["red circle", "blue star"])
    ... # doctest: +SKIP
    """

    handle = resolve_model(model)
    seg = segment(image, prompts, model=handle, method=method, **segment_options)
    layers = None
    if layer_prompt is not None and handle.grounding.layer_maps:
        k = seg.prompts.index(layer_prompt) if isinstance(layer_prompt, str) else int(layer_prompt)
        if not 0 <= k < len(seg.prompts):
            raise ValueError(f"layer_prompt {layer_prompt!r} is not one of the prompts")
        how = layer_method or ("rollout" if seg.settings["method"] == "rollout" else "relevance")
        maps = layer_maps(seg.image, seg.prompts[k], model=handle, method=how)
        names = [f"layer {l}" for l in range(len(maps))]
        heading = (f"Per-layer {how} of “{seg.prompts[k]}”" if how == "relevance"
                   else "Per-layer rollout (the same for every prompt)")
        layers = (maps, names, heading + ", through layers 0..l")
    return segmentation_report(seg, title=title, layers=layers, max_side=max_side,
                               max_bytes=max_bytes)


def _initial(variants: list[dict], settings: dict, n_layers: int) -> int:
    """Index of the variant that :func:`groundroll.align`'s settings describe (else the
    first fused, all-layer, unshifted one)."""
    layers = settings.get("layers")
    method = settings.get("method")
    if layers is None or (isinstance(layers, list) and len(layers) in (0, n_layers)):
        layer = "all"
    elif isinstance(layers, int):
        layer = layers
    elif method in ("raw", "norm") and len(layers) == 1:
        layer = layers[0]
    elif layers == list(range(max(layers) + 1)):
        layer = max(layers) if max(layers) < n_layers - 1 else "all"
    else:
        layer = None
    heads = settings.get("heads")
    head = "fused" if heads is None else (heads if isinstance(heads, int) else (
        heads[0] if len(heads) == 1 else None))
    want = (method, layer, head, bool(settings.get("shift")))
    for i, v in enumerate(variants):
        if (v["method"], v["layer"], v["head"], v["shift"]) == want:
            return i
    return next((i for i, v in enumerate(variants)
                 if v["layer"] == "all" and v["head"] == "fused" and not v["shift"]), 0)


def _n_layers_heads(bundle) -> tuple[int, int]:
    config = bundle.model.config
    layers = next((getattr(config, n) for n in ("decoder_layers", "num_decoder_layers",
                                                  "num_layers") if getattr(config, n, None)), 1)
    heads = next((getattr(config, n) for n in ("decoder_attention_heads", "num_heads",
                                                 "num_attention_heads")
                  if getattr(config, n, None)), 1)
    return int(layers), int(heads)


def explore_alignment(src, tgt=None, *, model="bundled:toy-mt",
                      methods: Sequence[str] = ("raw", "norm", "rollout"),
                      shifts: Sequence[bool] = (False, True), per_layer: bool = True,
                      per_head: bool = True, extraction: str | None = None,
                      link_threshold: float | None = None, title: str | None = None,
                      max_bytes: int = DEFAULT_MAX_BYTES, progress: bool = False) -> str:
    """Align sentence pairs under many settings and show them all in one HTML page.

    Every variant of :func:`alignment_variants` is computed with
    :func:`groundroll.align` (one forced pass each); the page switches method, layer,
    head, shift and extraction, highlights a word's links on hover and exports
    Pharaoh lines.

    Parameters
    ----------
    src : str or sequence of str
        Source sentence(s), whitespace-tokenised.
    tgt : str or sequence of str, optional
        Target sentence(s). None: translate ``src`` once and align the translation.
    model : Bundle or str
        A translation model (default ``bundled:toy-mt``).
    methods, shifts, per_layer, per_head
        Which variants to compute (see :func:`alignment_variants`).
    extraction : {"argmax", "threshold", "itermax", "mutual"}, optional
        Initial extraction in the page (default: the model's default for
        :func:`groundroll.align`; the page opens on the variant those defaults pick).
    link_threshold : float, optional
        Initial limit for ``"threshold"``.
    max_bytes : int
        Size limit of the page (pairs, then variants, beyond it are left out with a
        note).
    progress : bool
        Show a progress bar over the variants.

    Returns
    -------
    str
        The page as one HTML document, with every variant's matrices embedded.

    Examples
    --------
    >>> html = explore_alignment("su tuga vefin", model="bundled:toy-mt")  # doctest: +SKIP
    """

    for method in methods:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not methods:
        raise ValueError("methods must name at least one method")
    bundle = _bundle(model)
    single = isinstance(src, str)
    srcs = [src] if single else list(src)
    if tgt is not None:
        tgts = [tgt] if isinstance(tgt, str) else list(tgt)
        if len(tgts) != len(srcs):
            raise ValueError(f"{len(srcs)} source and {len(tgts)} target sentences")
    # The model's own defaults (and the translation, without a target) pick the
    # variant and extraction the page opens with.
    first = run_align(srcs, None if tgt is None else tgts, model=bundle)
    tgts = [a.tgt_words for a in first]
    defaults = first[0].settings
    n_layers, n_heads = _n_layers_heads(bundle)
    variants = alignment_variants(n_layers=n_layers, n_heads=n_heads, methods=methods,
                                  shifts=shifts, per_layer=per_layer, per_head=per_head)
    # One captured forward pass per head setting serves every method, layer and shift.

    by_heads: dict = {}
    for k, v in enumerate(variants):
        by_heads.setdefault(v["head"], []).append(k)
    matrices: list = [None] * len(variants)
    groups = list(by_heads.items())
    if progress:
        from tqdm.auto import tqdm

        groups = tqdm(groups, desc="head settings", unit="pass")
    src_words = [s.split() if isinstance(s, str) else list(s) for s in srcs]
    tgt_words = [t.split() if isinstance(t, str) else list(t) for t in tgts]
    for head, ks in groups:
        specs = []
        for k in ks:
            v = variants[k]
            layers = None if v["layer"] == "all" else (
                [v["layer"]] if v["method"] in ("raw", "norm")
                else list(range(v["layer"] + 1)))
            specs.append((v["method"], layers, v["shift"]))
        out, src_words, tgt_words = _matrices(
            bundle, src_words, tgt_words, specs=specs,
            heads=None if head == "fused" else [head], head_fusion="mean", residual=0.5,
            batch_size=16, max_length=None, max_relevance_tokens=128, relevance_chunk=256,
            generate_kwargs=None, progress=False)
        for k, per_pair in zip(ks, out):
            matrices[k] = [_rounded(m) for m in per_pair]
    pairs = [dict(src=list(s), tgt=list(t), matrices=[per_variant[i] for per_variant in matrices])
             for i, (s, t) in enumerate(zip(src_words, tgt_words))]
    initial = _initial(variants, defaults, n_layers)
    if defaults.get("extraction") in EXTRACTIONS and extraction is None:
        extraction = defaults["extraction"]
        if link_threshold is None:
            link_threshold = defaults.get("link_threshold")
    settings = dict(model=str(getattr(bundle, "name", "")), generated=tgt is None,
                    methods=list(methods), shifts=[bool(s) for s in shifts])
    notes = []
    if defaults.get("reverse_model"):
        notes.append(f"The model's default alignment also reads a reverse model"
                     f" ({defaults['reverse_model']}); this page reads both directions from"
                     " the target-to-source matrix alone, so its links may differ.")
    return _html(pairs, variants, initial=initial, extraction=extraction or "argmax",
                 link_threshold=link_threshold, title=title or "Word alignment explorer",
                 settings=settings, max_bytes=max_bytes, notes=notes)
