"""Caption grounding pages: the caption's words, each with its heatmap and mask over the
image (:class:`~groundroll.captioning.CaptionGrounding`)."""

from __future__ import annotations

import numpy as np

from ._page import escape, page, png_data_uri
from .segmentation import _colormap, _resize, _shrink_hw

__all__ = ["caption_report"]

#: Long side of the pictures on the page, in pixels.
PICTURE_SIDE = 256


def _overlay(image: np.ndarray, heat: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image under the heatmap's colours (weighted by the map), the mask's outline
    in white."""
    colours = _colormap(heat)[..., :3].astype(np.float32)
    weight = (0.25 + 0.6 * heat)[..., None]
    out = image.astype(np.float32) * (1 - weight) + colours * weight
    edge = mask & ~(np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1)
                    & np.roll(mask, -1, 1))
    out[edge] = 255.0
    return out.clip(0, 255).astype(np.uint8)


def caption_report(result, *, title: str | None = None) -> str:
    """A self-contained HTML page for a caption grounding: the caption, and per word
    its log-probability and its map over the image (the mask outlined); function words
    are shown dimmed.

    Parameters
    ----------
    result : CaptionGrounding
        A result of :func:`groundroll.ground_caption`.
    title : str, optional

    Returns
    -------
    str
        One HTML document, pictures as PNG data URIs.
    """
    full = tuple(int(x) for x in result.heatmaps.shape[1:]) if len(result.heatmaps) \
        else tuple(int(x) for x in result.image.shape[:2])
    hw = _shrink_hw(full, PICTURE_SIDE)
    image = result.image if result.image is not None else np.zeros(full + (3,), np.uint8)
    small = _resize(image, hw)
    cards = []
    for k, word in enumerate(result.words):
        heat = _resize(result.heatmaps[k], hw)
        mask = _resize(result.masks[k].astype(np.uint8), hw, nearest=True) > 0
        dim = "" if result.content[k] else " gr-cap-dim"
        cards.append(
            f'<figure class="gr-cap-word{dim}"><img alt="{escape(word)}" '
            f'src="{png_data_uri(_overlay(small, heat, mask))}">'
            f"<figcaption>{escape(word)} <small>log p {result.logprobs[k]:.2f}"
            "</small></figcaption></figure>")
    how = "generated" if result.generated else "given"
    flag = " (cut at the token limit)" if result.truncated else ""
    body = (f'<section class="gr-caption"><p><img alt="image" '
            f'src="{png_data_uri(small)}"></p><p>Caption ({how}{flag}): '
            f"<q>{escape(result.caption)}</q>; method {escape(result.settings.get('method'))}"
            f'</p><div class="gr-cap-words">{"".join(cards)}</div></section>')
    data = {"caption": result.caption, "words": list(result.words),
            "content": [bool(c) for c in result.content],
            "logprobs": [round(float(v), 4) for v in result.logprobs]}
    notes = [f"pictures shown at {hw[1]} x {hw[0]} (image {full[1]} x {full[0]})"] \
        if hw != full else None
    return page(title=title or f"Caption grounding: {result.caption}", kind="caption",
                data=data, script="", body=body, notes=notes)
