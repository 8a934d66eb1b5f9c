"""Token sources the Hugging Face family modules share."""

from __future__ import annotations

from .sites import TokenSource

__all__ = ["EAGER", "text_tokens", "image_tokens"]

#: Hugging Face models are captured with eager attention (sdpa returns no weights).
EAGER = "hf_eager"


def text_tokens(stream: str, *, pattern=None, classes=(), special=("bos@first", "eos@last"),
                causal: bool = False) -> TokenSource:
    return TokenSource(stream, pattern=pattern, classes=classes, special=special,
                       causal=causal)


def image_tokens(classes: tuple[str, ...], *, prefix: int = 1) -> TokenSource:
    return TokenSource("vision", classes=classes, reader="image", prefix=prefix)
