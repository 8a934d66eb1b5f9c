"""Word alignments from a translation model's attention.

:func:`align` runs a seq2seq model (Marian, BART, mBART, M2M100/NLLB, Pegasus, T5) with
teacher forcing on a sentence pair, turns its attention into a target x source map with
:func:`groundroll.compose.compose`, aggregates subwords into words and extracts hard
links. :func:`layer_scan` scores every layer x method x shift against gold alignments.

Row offsets
-----------
Under teacher forcing, decoder row ``t`` has target token ``t - 1`` as input and predicts
target token ``t`` (row 0 has the decoder start token as input). Two readings of "the row
of target word ``t``":

* ``shift=False`` (AWO, *alignment by word output*): the row that predicts the word;
* ``shift=True`` (AWI, *shift-att*, Chen et al. 2020): the row where the word is the
  decoder input, one row later.

Every method defaults to AWO (:data:`DEFAULT_SHIFT`): on the bundled toy-mt model AWO
beats AWI at every layer and for every method (``benchmarks/alignment.py``: raw last
layer 5% AER with AWO against 80% with AWI). On large real NMT models the literature
reports the opposite for raw cross-attention of the middle layers (shift-att, Chen et
al. 2020), so the better setting depends on the model and the layer: measure with
:func:`layer_scan` and pass ``shift=`` explicitly.

Without a target, :func:`align` translates with ``model.generate`` and then runs one
forced forward pass on the generated ids; attention is never read from cached
generation steps.

The pieces live beside this module: :mod:`~groundroll.alignment.extract` (links from a
matrix, numpy only), :mod:`~groundroll.alignment.batching` (teacher-forcing batches and
translation), :mod:`~groundroll.alignment.maps` (word matrices from attention),
:mod:`~groundroll.alignment.result` (:class:`Alignment`), :mod:`~groundroll.alignment.scan`
(:func:`layer_scan`) and :mod:`~groundroll.alignment.methods` (:data:`METHODS`).
"""

from __future__ import annotations

from groundroll._options import call_keywords, check_align_options, merge_keywords
from groundroll.alignment.batching import (  # noqa: F401  (used by profile, composition, report)
    FALLBACK_MAX_LENGTH,
    _batches,
    _bundle,
    _limit,
    _make_batch,
    _n_decoder_layers,
    _plain,
    _shift_rows,
    _word_matrices,
    _words,
)
from groundroll.alignment.extract import (
    DEFAULT_THRESHOLD,
    EXTRACTIONS,
    SYMMETRIZATIONS,
    extract_links,
)
from groundroll.alignment.options import AlignOptions, check_extraction
from groundroll.alignment.maps import (  # noqa: F401  (used by profile, composition, report, tests)
    _matrices,
    _relevance_maps,
)
from groundroll.alignment.methods import DEFAULT_SHIFT, METHODS
from groundroll.alignment.profile import peak_mass_layer, resolve_defaults
from groundroll.alignment.result import Alignment
from groundroll.alignment.scan import LayerScan, _scan_inputs, layer_scan  # noqa: F401

__all__ = [
    "Alignment",
    "align",
    "AlignOptions",
    "extract_links",
    "layer_scan",
    "LayerScan",
    "METHODS",
    "EXTRACTIONS",
    "SYMMETRIZATIONS",
    "DEFAULT_SHIFT",
    "DEFAULT_THRESHOLD",
]


def align(
    src, tgt=None, *, model, method: str | None = None, layers=None, heads=None,
    shift: bool | None = None, extraction: str | None = None,
    link_threshold: float | None = None, symmetrize: str | None = None, profile=None,
    reverse_model=None, batch_size: int = 16, max_length: int | None = None,
    head_fusion="mean", residual: float = 0.5, max_relevance_tokens: int = 128,
    relevance_chunk: int = 256, generate_kwargs: dict | None = None, progress: bool = False,
    device=None, options: AlignOptions | dict | None = None,
):
    """Word alignment of sentence pairs from a translation model's attention.

    Parameters
    ----------
    src : str, sequence of str, or sequence of sequence of str
        One source sentence (a string, split on whitespace) or a list of them (each a
        string or a list of words).
    tgt : like ``src``, optional
        Target sentences (forced decoding on them). None: translate ``src`` with
        ``model.generate``, then run one forced pass on the translation.
    model : groundroll.zoo.Bundle or str
        A loaded bundle or a spec for :func:`groundroll.zoo.load`
        (``"bundled:toy-mt"``, ``"hf:Helsinki-NLP/opus-mt-de-en"``, ...).
    method : {"raw", "rollout", "relevance", "norm", "flow"}, optional
        None (the default call): the settings of the model's alignment profile
        (:mod:`groundroll.alignment.profile`: method, layers, shift and extraction that
        measured best on gold pairs, stored beside the model), or, without a profile,
        ``raw`` cross-attention of the single most peaked layer
        (:func:`~groundroll.alignment.profile.peak_mass_layer`, chosen over all sentences of
        the call). ``raw``: fused cross-attention averaged over ``layers``. ``norm``: the same with
        value-norm weighting. ``rollout``: encoder rollout composed through the
        decoder's self- and cross-attention. ``relevance``: gradient-weighted relevance
        (Chefer et al.), one score per target token (its log-probability). ``flow``:
        attention flow over the composed graph (slow). See
        :func:`groundroll.compose.compose`. ``decoder-rollout``: the rollout without
        encoder mixing; ``peak-weighted``: the layers' cross-attention weighted by how
        peaked each is (:mod:`groundroll.alignment.composition`).
    layers : int or sequence of int, optional
        ``raw``/``norm``: cross-attention layers averaged (default all). ``rollout``,
        ``relevance``, ``flow``: decoder layers taking part (default all).
    heads : int or sequence of int, optional
        Heads kept before fusion (default all).
    shift : bool, optional
        Read target word ``t`` at the row where it is the decoder input (AWI) instead of
        the row that predicts it (AWO). None: :data:`DEFAULT_SHIFT` of the method.
    extraction : {"argmax", "threshold", "itermax", "mutual"}, optional
        Default: the profile's (when ``method`` is None), else ``"argmax"``.
    link_threshold : float, optional
        For ``extraction="threshold"``: exclusive lower limit on row-normalised scores
        (default :data:`DEFAULT_THRESHOLD`); for ``"mutual"``: on the geometric mean of
        both directions' probabilities (default the profile's, else
        :data:`~groundroll.alignment.extract.DEFAULT_MUTUAL_THRESHOLD`).
    symmetrize : {"intersection", "union", "grow-diag", "grow-diag-final", "grow-diag-final-and"}, optional
        Combine target-to-source and source-to-target links (see :func:`extract_links`).
    profile : None, False, path or AlignProfile
        Used when ``method`` is None. None: the profile stored with the model, if any;
        False: none (the unsupervised rule); a path or an
        :class:`~groundroll.alignment.profile.AlignProfile`: that one. Options passed
        explicitly always win over the profile's.
    reverse_model : Bundle or str, optional
        A target-to-source model; with ``symmetrize`` (or ``itermax``, ``mutual``) its alignment
        gives the backward direction instead of the columns of the forward matrix.
        Default: the profile's, when the profile names one and the caller sets no
        extraction.
    batch_size : int
        Sentence pairs per forward pass (padded; results do not depend on it).
    max_length : int, optional
        Token limit per sentence (default: the tokenizer's/model's). Longer sentences are
        truncated with a warning; words cut off get no links.
    head_fusion, residual
        As in :func:`groundroll.compose.compose`.
    max_relevance_tokens : int
        ``relevance``: target tokens beyond this get zero rows (with a warning).
    relevance_chunk : int
        ``relevance``: at most this many (sentence, target token) copies per pass.
    generate_kwargs : dict, optional
        Passed to ``model.generate`` when ``tgt`` is None.
    progress : bool
        Show a progress bar (tqdm, on stderr).
    device : str or torch.device, optional
        Where the model (and ``reverse_model``) runs: its own device by default. A spec
        string is loaded there; a loaded model on another device is a ValueError. The
        forward passes, the attention and its composition run on that device.
    options : AlignOptions or dict, optional
        Every setting above but ``model``, ``batch_size``, ``progress`` and ``device``
        as one object (or a dict of its fields; an unknown name is a TypeError listing
        the accepted ones). A keyword given beside it with a value other than its
        default replaces that field.

    Returns
    -------
    Alignment, or list of Alignment
        A list when ``src`` is a list.

    Examples
    --------
    >>> import groundroll as gr
    >>> a = gr.align("su tuga vefin", model="bundled:toy-mt")      # doctest: +SKIP
    >>> a.pharaoh()                                                 # doctest: +SKIP
    '0-0 1-1 2-1'
    """
    settings = merge_keywords(AlignOptions, options, call_keywords(AlignOptions, locals()),
                              what="align()")
    check_align_options(batch_size=batch_size)
    single = isinstance(src, str)
    srcs = [src] if single else list(src)
    if tgt is not None:
        tgts = [tgt] if isinstance(tgt, str) else list(tgt)
        if single != isinstance(tgt, str) or len(tgts) != len(srcs):
            raise ValueError(f"src and tgt must both be one sentence or lists of the same"
                             f" length; got {len(srcs)} source and {len(tgts)} target")
    else:
        tgts = None
    bundle = _bundle(model, device)
    return _align(bundle, srcs, tgts, settings, single=single, batch_size=batch_size,
                  progress=progress, device=device)


def _align(bundle, srcs, tgts, options: AlignOptions, *, single: bool, batch_size: int,
           progress: bool, device):
    """:func:`align` once its inputs and options are checked and its model loaded."""
    chosen = resolve_defaults(
        bundle, method=options.method, layers=options.layers, shift=options.shift,
        extraction=options.extraction, link_threshold=options.link_threshold,
        symmetrize=options.symmetrize, profile=options.profile)
    method, layers, shift = chosen["method"], chosen["layers"], chosen["shift"]
    extraction, link_threshold, symmetrize = (chosen["extraction"], chosen["link_threshold"],
                                              chosen["symmetrize"])
    check_align_options(link_threshold=link_threshold)     # a profile's, too
    check_extraction(extraction, symmetrize)
    heads, head_fusion, residual = options.heads, options.head_fusion, options.residual
    passes = dict(heads=heads, head_fusion=head_fusion, residual=residual,
                  batch_size=batch_size, max_length=options.max_length,
                  max_relevance_tokens=options.max_relevance_tokens,
                  relevance_chunk=options.relevance_chunk, progress=progress)
    if chosen["rule"]:
        # Every layer from the same forward passes; keep the most peaked one.
        specs = [(method, [k], shift) for k in range(_n_decoder_layers(bundle))]
    else:
        specs = [(method, layers, shift)]
    matrices, src_words, tgt_words = _matrices(
        bundle, [_words(s) for s in srcs], None if tgts is None else [_words(t) for t in tgts],
        specs=specs, generate_kwargs=options.generate_kwargs, **passes)
    peak = None
    if chosen["rule"]:
        best, peak = peak_mass_layer(matrices)
        layers = [best]
        matrices = [matrices[best]]
    forward = matrices[0]
    backward = [None] * len(srcs)
    reverse_model, reverse_layers = options.reverse_model, layers
    if reverse_model is None and chosen["reverse_model"] is not None:
        reverse_model = chosen["reverse_model"]
        reverse_layers = chosen["reverse_layers"] or layers
    if symmetrize is None and extraction not in ("itermax", "mutual"):
        reverse_model = None                 # one direction: nothing to read it for
    if reverse_model is not None:
        rev, _, _ = _matrices(
            _bundle(reverse_model, device), tgt_words, src_words,
            specs=[(method, reverse_layers, shift)], generate_kwargs=None, **passes)
        backward = [m.T for m in rev[0]]
    settings = dict(model=getattr(bundle, "name", ""), method=method,
                    layers=_plain(layers), heads=_plain(heads), shift=shift,
                    extraction=extraction, link_threshold=link_threshold,
                    symmetrize=symmetrize,
                    reverse_model=None if reverse_model is None else str(
                        getattr(reverse_model, "name", reverse_model)),
                    head_fusion=head_fusion if isinstance(head_fusion, str) else "tensor",
                    residual=residual, generated=tgts is None, defaults=chosen["defaults"])
    if peak is not None:
        settings["peak_mass"] = [round(x, 4) for x in peak]
    out = []
    for m, b, sw, tw in zip(forward, backward, src_words, tgt_words):
        found = extract_links(m, extraction=extraction, link_threshold=link_threshold,
                              symmetrize=symmetrize, backward=b)
        out.append(Alignment(list(sw), list(tw), m, found,
                             {(s, t): float(m[t, s]) for s, t in found}, dict(settings)))
    return out[0] if single else out

