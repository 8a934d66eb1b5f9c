"""What ``groundroll.load`` returns: a model with everything needed to run it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["Bundle"]


@dataclass
class Bundle:
    """A loaded model and its companions.

    Attributes
    ----------
    name : str
        The spec it was loaded from, e.g. ``"bundled:shapes-clip"``.
    model : torch.nn.Module
        The model, in eval mode.
    adapter : str
        Name of the groundroll adapter family that captures its attention.
    preprocess : callable or None
        Image transform (PIL image -> ``[3, H, W]`` float tensor) for image models.
    tokenizer : callable or None
        Text tokenizer. open_clip models: ``tokenizer(list_of_str) -> [batch, context]``
        long tensor. Hugging Face models: the ``PreTrainedTokenizer(Fast)``.
    meta : dict
        Free-form facts: image size, context length, class labels, prompt templates,
        training recipe and measured quality for bundled models.
    """

    name: str
    model: Any
    adapter: str
    preprocess: Callable | None = None
    tokenizer: Any = None
    meta: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        params = sum(p.numel() for p in self.model.parameters()) if hasattr(
            self.model, "parameters") else 0
        return (f"Bundle({self.name!r}, {type(self.model).__name__}, adapter="
                f"{self.adapter!r}, {params / 1e6:.2f}M parameters)")
