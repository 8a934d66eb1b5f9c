"""Load open_clip models (CLIP, CoCa) into a :class:`~groundroll.zoo.bundle.Bundle`.

Specs understood by :func:`load_open_clip`:

- a local directory in open_clip's ``local-dir:`` layout (``open_clip_config.json`` with
  ``model_cfg`` and ``preprocess_cfg``, ``open_clip_model.safetensors``), optionally with a
  word-level ``tokenizer.json`` and a ``meta.json`` (the bundled models use this layout);
- ``ARCH/TAG``, e.g. ``ViT-B-16/openai``: open_clip's pretrained registry (downloads);
- ``ARCH@/path/to/checkpoint`` (``.safetensors``, ``.pt``, ``.bin``): a local checkpoint
  for a built-in architecture, e.g. ``ViT-B-16@/ckpt/open_clip_model.safetensors``.

The model is always built by open_clip's own factory (``open_clip.create_model``), so the
modules are stock open_clip modules.
"""

from __future__ import annotations

import contextlib

import json
import os
import warnings
from pathlib import Path
from typing import Sequence

from ._offline import hub_offline
from .bundle import Bundle

__all__ = ["load_open_clip", "load_open_clip_dir", "WordTokenizer", "OFFLINE_HINT"]

OFFLINE_HINT = (
    "To load a checkpoint you already have, pass a local path instead: "
    "'open_clip:ViT-B-16@/path/to/open_clip_model.safetensors' (ARCH@CHECKPOINT), or a "
    "directory holding open_clip_config.json and open_clip_model.safetensors."
)


class WordTokenizer:
    """Word-level tokenizer with open_clip's tokenizer interface.

    Wraps a Hugging Face ``tokenizers`` file whose vocabulary holds ``[PAD]`` (id 0),
    ``[SOT]``, ``[UNK]`` and ``[EOT]`` (the largest id, so open_clip's default text pooling
    at ``argmax(token ids)`` lands on the end-of-text token).

    Parameters
    ----------
    tokenizer : str, Path or tokenizers.Tokenizer
        Path to ``tokenizer.json`` or a loaded tokenizer.
    context_length : int
        Length of every encoded row, ``[SOT] words... [EOT] [PAD]...``.

    Examples
    --------
    >>> tok = WordTokenizer("groundroll/zoo/bundled/shapes-clip/tokenizer.json", 20)
    ... # doctest: +SKIP
    >>> tok(["a red circle"]).shape  # doctest: +SKIP
    torch.Size([1, 20])
    """

    def __init__(self, tokenizer, context_length: int):
        from tokenizers import Tokenizer

        if not isinstance(tokenizer, Tokenizer):
            tokenizer = Tokenizer.from_file(str(tokenizer))
        self.tokenizer = tokenizer
        self.context_length = int(context_length)
        self.pad_token_id = tokenizer.token_to_id("[PAD]")
        self.sot_token_id = tokenizer.token_to_id("[SOT]")
        self.eot_token_id = tokenizer.token_to_id("[EOT]")
        self.unk_token_id = tokenizer.token_to_id("[UNK]")
        self.vocab_size = tokenizer.get_vocab_size()
        if self.eot_token_id != self.vocab_size - 1 or self.pad_token_id != 0:
            raise ValueError("expected [PAD] = 0 and [EOT] = the largest id")

    def encode(self, text: str) -> list[int]:
        """Word ids of ``text`` without special tokens."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        """Words of ``ids``, special tokens dropped."""
        ids = [int(i) for i in ids]
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def tokens(self, ids) -> list[str]:
        """Token string per id (``[PAD]``, ``[SOT]`` etc. included): one row of ids."""
        return [self.tokenizer.id_to_token(int(i)) for i in ids]

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None):
        """Encode to a ``[batch, context_length]`` long tensor, padded with 0.

        Prompts longer than the context are truncated (a warning names them); the last
        position then holds ``[EOT]``.
        """
        import torch

        if isinstance(texts, str):
            texts = [texts]
        length = int(context_length or self.context_length)
        out = torch.full((len(texts), length), self.pad_token_id, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.sot_token_id, *self.encode(text), self.eot_token_id]
            if len(ids) > length:
                warnings.warn(
                    f"prompt {text!r} has {len(ids)} tokens; truncated to the context "
                    f"length {length}", stacklevel=2)
                ids = ids[: length - 1] + [self.eot_token_id]
            out[row, : len(ids)] = torch.tensor(ids)
        return out

    def __repr__(self) -> str:
        return (f"WordTokenizer(vocab_size={self.vocab_size}, "
                f"context_length={self.context_length})")


def _family(model):
    """The model's family record (``"open_clip"`` or ``"open_clip_coca"``)."""
    # groundroll.families imports torch: loaded once a model is, not with the zoo.
    from groundroll.families import family_for

    return family_for(model)


def load_open_clip_dir(path: str | os.PathLike, *, device: str = "cpu") -> Bundle:
    """Load a model directory through open_clip's ``local-dir:`` schema.

    Parameters
    ----------
    path : str or PathLike
        Directory with ``open_clip_config.json`` (``{"model_cfg": ..., "preprocess_cfg":
        ...}``) and one checkpoint; ``tokenizer.json`` and ``meta.json`` are optional.
    device : str
        Torch device.

    Returns
    -------
    Bundle
        Model in eval mode and float32, open_clip's eval transform, the tokenizer (the
        word-level one when ``tokenizer.json`` is present, else open_clip's tokenizer for
        the config) and ``meta`` (``meta.json`` plus ``path`` and ``family``, which is
        ``"open_clip"`` or ``"open_clip_coca"`` like ``adapter``).

    Examples
    --------
    >>> from groundroll.zoo.openclip import load_open_clip_dir
    >>> b = load_open_clip_dir("groundroll/zoo/bundled/shapes-clip")  # doctest: +SKIP
    >>> b.adapter  # doctest: +SKIP
    'open_clip'
    """
    import open_clip

    path = Path(path).resolve()
    if not (path / "open_clip_config.json").is_file():
        raise FileNotFoundError(f"{path} has no open_clip_config.json")
    with _unreadable_checkpoint(str(path)):
        model, _, preprocess = open_clip.create_model_and_transforms(
            f"local-dir:{path}", device=device, precision="fp32")
    model = model.float().eval()
    meta = json.loads((path / "meta.json").read_text()) if (path / "meta.json").is_file() \
        else {}
    meta = {**meta, "path": str(path)}
    if (path / "tokenizer.json").is_file():
        context = meta.get("context_length") or getattr(model, "context_length", None)
        tokenizer = WordTokenizer(path / "tokenizer.json", context)
    else:
        tokenizer = open_clip.get_tokenizer(f"local-dir:{path}")
    meta.setdefault("context_length", getattr(tokenizer, "context_length", None))
    image_size = model.visual.image_size
    meta.setdefault("image_size", list(image_size) if isinstance(image_size, tuple)
                    else image_size)
    family = _family(model).name
    meta.setdefault("family", family)
    return Bundle(name=str(path), model=model, adapter=family, preprocess=preprocess,
                  tokenizer=tokenizer, meta=meta)


def _pretrained_or_fail(arch: str, tag: str, device: str):
    """Build ``arch`` with registry weights ``tag``; fail at once when they cannot be had."""
    import open_clip
    from open_clip import pretrained as oc_pretrained

    cfg = oc_pretrained.get_pretrained_cfg(arch, tag)
    if not cfg:
        raise ValueError(
            f"open_clip has no pretrained tag {tag!r} for {arch!r}; known tags: "
            f"{oc_pretrained.list_pretrained_tags_by_model(arch)}. {OFFLINE_HINT}")
    if not _is_cached(cfg):
        # huggingface_hub retries unreachable hosts with back-off for about a minute;
        # a cheap probe turns "no network" into an immediate, explicit error.
        reason = "HF_HUB_OFFLINE is set" if hub_offline() else _unreachable(cfg)
        if reason:
            raise RuntimeError(
                f"open_clip weights {arch}/{tag} are not in the local cache and cannot be "
                f"downloaded ({reason}). {OFFLINE_HINT}")
    try:
        return open_clip.create_model_and_transforms(arch, pretrained=tag, device=device)
    except Exception as err:  # download errors come in many types
        raise RuntimeError(
            f"could not load open_clip weights {arch}/{tag}: {err}. {OFFLINE_HINT}") from err


def _unreachable(cfg: dict, timeout: float = 3.0) -> str | None:
    """Why the weights' host cannot be reached, or None when a TCP connection opens."""
    import socket
    from urllib.parse import urlparse

    if cfg.get("hf_hub"):
        try:
            from huggingface_hub import constants
            endpoint = constants.ENDPOINT
        except ImportError:
            return "huggingface_hub is not installed"
    else:
        endpoint = cfg.get("url", "")
    url = urlparse(endpoint)
    if not url.hostname:
        return f"no download address in the pretrained config {cfg}"
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return None
    except OSError as err:
        return f"{url.hostname}:{port} unreachable: {err}"


def _is_cached(cfg: dict) -> bool:
    """True when open_clip's weights for this pretrained config are already downloaded."""
    hub = cfg.get("hf_hub", "")
    if not hub:
        return False
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    # open_clip writes ``org/repo/`` or ``org/repo/filename``.
    parts = hub.strip("/").split("/")
    repo_id = "/".join(parts[:2])
    names = ["/".join(parts[2:])] if len(parts) > 2 else []
    names += ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    return any(isinstance(try_to_load_from_cache(repo_id, n), str) for n in names)


@contextlib.contextmanager
def _unreadable_checkpoint(spec: str):
    """A file that is not a loadable checkpoint (not a pickle or safetensors file, a
    truncated one, weights of another architecture, an unknown architecture) becomes
    a one-line ValueError naming the spec; torch and open_clip raise many types for it."""
    try:
        yield
    except Exception as err:  # UnpicklingError, SafetensorError, RuntimeError, KeyError...
        if isinstance(err, (FileNotFoundError, MemoryError)):
            raise
        first = (str(err).strip().splitlines() or [""])[0]
        if len(first) > 200:
            first = first[:197] + "..."
        raise ValueError(f"cannot load open_clip model {spec!r}: not a checkpoint of that"
                         f" architecture ({type(err).__name__}: {first})") from None


def load_open_clip(spec: str | os.PathLike, *, device: str = "cpu") -> Bundle:
    """Load an open_clip model from a directory, a registry tag or a local checkpoint.

    Parameters
    ----------
    spec : str or PathLike
        A directory (see :func:`load_open_clip_dir`), ``"ARCH/TAG"`` (open_clip registry)
        or ``"ARCH@/path/to/checkpoint"``.
    device : str
        Torch device.

    Returns
    -------
    Bundle
        ``adapter`` is ``"open_clip"`` or ``"open_clip_coca"``.

    Raises
    ------
    RuntimeError
        When registry weights are neither cached nor downloadable; the message says how to
        load a local checkpoint instead.

    Examples
    --------
    >>> b = load_open_clip("ViT-B-16@/ckpt/open_clip_model.safetensors")  # doctest: +SKIP
    """
    import open_clip

    text = os.fspath(spec)
    if Path(text).is_dir():
        return load_open_clip_dir(text, device=device)
    if "@" in text:
        arch, _, checkpoint = text.partition("@")
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f"checkpoint {checkpoint!r} not found (spec {text!r})")
        with _unreadable_checkpoint(text):
            model, _, preprocess = open_clip.create_model_and_transforms(
                arch, pretrained=checkpoint, device=device)
        tag = checkpoint
    elif "/" in text:
        arch, _, tag = text.partition("/")
        model, _, preprocess = _pretrained_or_fail(arch, tag, device)
    else:
        raise ValueError(
            f"cannot read open_clip spec {text!r}: expected a directory, 'ARCH/TAG' or "
            f"'ARCH@/path/to/checkpoint'. Architectures: {open_clip.list_models()[:8]}...")
    model = model.float().eval()
    tokenizer = open_clip.get_tokenizer(arch)
    image_size = model.visual.image_size
    family = _family(model)
    mean, std = family.grounding_for(model).mean_std(model, None)
    meta = {
        "family": family.name,
        "arch": arch,
        "pretrained": tag,
        "image_size": list(image_size) if isinstance(image_size, tuple) else image_size,
        "context_length": getattr(tokenizer, "context_length", None),
        "mean": list(mean),
        "std": list(std),
    }
    return Bundle(name=text, model=model, adapter=family.name, preprocess=preprocess,
                  tokenizer=tokenizer, meta=meta)
