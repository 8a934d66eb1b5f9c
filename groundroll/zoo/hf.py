"""Load Hugging Face transformers models into a :class:`~groundroll.zoo.bundle.Bundle`.

The model class is chosen by the family record of the config's ``model_type``
(:mod:`groundroll.families`: seq2seq translation models, CLIP, SigLIP, BLIP retrieval,
plain encoders); any other model type is loaded by the class its config suggests
(``VisionEncoderDecoderModel`` for image captioners, ``AutoModelForSeq2SeqLM`` for other
encoder-decoders, ``AutoModel`` otherwise) and captured from its own attention
declarations. ``transformers`` is imported lazily.

Offline, a hub name fails at once with a message that says how to load from a local
folder instead; nothing waits on network retries.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path

from groundroll.zoo._offline import hub_offline
from groundroll.zoo.bundle import Bundle

__all__ = ["load_hf", "OFFLINE_HINT", "HubUnavailableError", "letterbox",
           "LetterboxPreprocess"]

OFFLINE_HINT = (
    "To use a model without hub access, on a machine that has it run "
    "`model.save_pretrained(folder)` and `tokenizer.save_pretrained(folder)` (or the "
    "processor's), copy the folder here and load 'hf:/path/to/folder'; or copy the "
    "model's files into the local Hugging Face cache (HF_HOME) and set HF_HUB_OFFLINE=1."
)


class HubUnavailableError(RuntimeError):
    """A hub model could not be had offline (not cached, no network)."""


class ImagePreprocess:
    """PIL image -> ``[3, H, W]`` float tensor through a Hugging Face image processor."""

    def __init__(self, image_processor):
        self.image_processor = image_processor

    def __call__(self, image):
        return self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]

    def __repr__(self) -> str:
        return f"ImagePreprocess({type(self.image_processor).__name__})"


def letterbox(image, size: int, *, fill: int = 0):
    """Fit a PIL image into a ``size`` x ``size`` square: the longer side resized to
    ``size`` (bicubic), the image centred on ``fill``.

    The layout of open_clip's ``resize_mode="longest"`` preprocess, pixel for pixel.

    Examples
    --------
    >>> from PIL import Image
    >>> letterbox(Image.new("RGB", (160, 128), "white"), 96).getpixel((48, 5))
    (0, 0, 0)
    """
    from PIL import Image

    image = image.convert("RGB")
    width, height = image.size
    ratio = max(width, height) / size
    resized = (max(1, round(width / ratio)), max(1, round(height / ratio)))
    if resized != image.size:
        image = image.resize(resized, Image.BICUBIC)
    out = Image.new("RGB", (size, size), (fill,) * 3)
    out.paste(image, ((size - resized[0]) // 2, (size - resized[1]) // 2))
    return out


class LetterboxPreprocess(ImagePreprocess):
    """:class:`ImagePreprocess` after :func:`letterbox`, for models trained on whole
    images padded to a square (the folder's meta.json says ``"resize_mode": "longest"``).
    """

    def __init__(self, image_processor, size: int, *, fill: int = 0):
        super().__init__(image_processor)
        self.size, self.fill = int(size), int(fill)

    def __call__(self, image):
        return super().__call__(letterbox(image, self.size, fill=self.fill))

    def __repr__(self) -> str:
        return (f"LetterboxPreprocess({type(self.image_processor).__name__}, "
                f"size={self.size}, fill={self.fill})")


def _hub_reachable(timeout: float = 1.5) -> bool:
    """Whether a TCP connection to the hub opens within ``timeout`` seconds.

    Name resolution has no timeout of its own, so the check runs in a daemon thread.
    """
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    result = []

    def probe():
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


def _companions(family, source: str, **kwargs):
    """Tokenizer and image preprocess for the family (either may be None)."""
    import transformers

    if family.companion == "tokenizer":
        return transformers.AutoTokenizer.from_pretrained(source, **kwargs), None
    if family.companion == "image_processor":
        processor = transformers.AutoImageProcessor.from_pretrained(source, **kwargs)
        return None, ImagePreprocess(processor)
    if family.companion == "tokenizer_and_image_processor":
        return (transformers.AutoTokenizer.from_pretrained(source, **kwargs),
                ImagePreprocess(transformers.AutoImageProcessor.from_pretrained(source,
                                                                                **kwargs)))
    processor = transformers.AutoProcessor.from_pretrained(source, **kwargs)
    return getattr(processor, "tokenizer", None), ImagePreprocess(processor.image_processor)


def load_hf(source: str | os.PathLike, *, device: str = "cpu", name: str | None = None) -> Bundle:
    """Load a Hugging Face model from a local folder or a hub repository.

    Parameters
    ----------
    source : str or PathLike
        A folder written by ``save_pretrained`` or a hub repository name.
    device : str
        Torch device.
    name : str, optional
        Spec recorded as ``Bundle.name`` (default: ``source``).

    Returns
    -------
    Bundle
        The model in eval mode and float32, its tokenizer (None for image-only models),
        an image preprocess for vision models (which letterboxes first when the folder's
        meta.json says ``"resize_mode": "longest"``: :class:`LetterboxPreprocess`), the
        capture adapter's name and ``meta`` (the folder's ``meta.json`` if any, plus
        ``model_type``, ``model_class``, ``source``, ``family``, the name of the model's
        family record (``"hf_marian"``, ``"hf_clip"``, ..., ``"hf_<model_type>"`` for a
        derived one) and ``kind``, the loader's kind: ``"hf_seq2seq"``, ``"hf_clip"``,
        ``"hf_siglip"``, ``"hf_blip"``, ``"hf_captioner"``, ``"hf_dual"`` or
        ``"hf_encoder"``). Image captioners load with eager attention.

    Raises
    ------
    HubUnavailableError
        A hub repository is not cached and the hub cannot be reached (or
        ``HF_HUB_OFFLINE`` is set); the message says how to load from a folder.
    groundroll.adapters.UnsupportedModelError
        The model's attention cannot be rolled out (windowed, local, sparse, CNN).

    Examples
    --------
    >>> from groundroll.zoo.hf import load_hf
    >>> bundle = load_hf("groundroll/zoo/bundled/toy-mt")  # doctest: +SKIP
    >>> bundle.adapter, bundle.meta["family"], bundle.meta["kind"]  # doctest: +SKIP
    ('hf_marian', 'hf_marian', 'hf_seq2seq')
    """
    import torch
    import transformers

    text = os.fspath(source)
    local = Path(text).expanduser()
    kwargs = {}
    if local.is_dir():
        text = str(local.resolve())
    elif text.startswith(("/", ".", "~")) or text.count("/") > 1:
        raise FileNotFoundError(f"no model folder at {text!r} (hub names are 'owner/name')")
    elif hub_offline() or not _hub_reachable():
        kwargs["local_files_only"] = True
    try:
        config = transformers.AutoConfig.from_pretrained(text, **kwargs)
    except (OSError, ValueError) as err:
        if local.is_dir():
            raise
        why = ("the hub is offline (HF_HUB_OFFLINE)" if hub_offline()
               else "the hub is unreachable" if kwargs else "it could not be fetched")
        raise HubUnavailableError(
            f"could not load Hugging Face model {text!r}: it is not in the local cache and "
            f"{why} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). "
            f"{OFFLINE_HINT}"
        ) from err

    # groundroll.families imports torch: loaded once a model is, not with the zoo.
    from groundroll.families import adapter_for, family_for, hf_loader

    # The family record says how to load; a model type no record names gets the loader
    # its config suggests and capture sites derived from its declarations.
    loader, _ = hf_loader(config)
    model_cls = getattr(transformers, loader.model_class)
    attention = ({"attn_implementation": loader.attn_implementation}
                 if loader.attn_implementation else {})
    model = model_cls.from_pretrained(text, dtype=torch.float32, **attention, **kwargs)
    model = model.to(device).eval()
    tokenizer, preprocess = _companions(loader, text, **kwargs)

    meta = {}
    if local.is_dir() and (local / "meta.json").is_file():
        meta = json.loads((local / "meta.json").read_text())
    if preprocess is not None and meta.get("resize_mode") == "longest":
        # Trained on whole images padded to a square, which no transformers image
        # processor does; the folder's processor only normalises.
        preprocess = LetterboxPreprocess(preprocess.image_processor, meta["image_size"],
                                         fill=meta.get("fill", 0))
    meta.update(model_type=config.model_type, model_class=type(model).__name__, source=text,
                family=family_for(model).name, kind=loader.kind)
    return Bundle(
        name=name or text,
        model=model,
        adapter=adapter_for(model).name,
        preprocess=preprocess,
        tokenizer=tokenizer,
        meta=meta,
    )
