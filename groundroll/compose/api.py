"""``compose``: a trace, a chain and a method give a target x source map."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..rollout._checks import _check_rows
from ..rollout.product import _take_rows
from ..trace import Tokens, Trace
from .chains import Chain, chain_for
from .methods import Method, get_method, method_names

__all__ = ["Composition", "compose"]


@dataclass
class Composition:
    """Result of :func:`compose`.

    Attributes
    ----------
    source_map : torch.Tensor
        ``[batch, T, S]`` target x source map (``[batch, head, T, S]`` head-specific).
        For ``rollout`` each row, together with ``target_map``'s, sums to 1.
    target_map : torch.Tensor or None
        ``[batch, T, T]`` target x target part (None for ``raw``/``norm``).
    source, target : str
        Token streams of the columns and rows.
    method : str
        Name of the composition method.
    settings : dict
        Every option the map was computed with (the method's options, ``shift``,
        ``rows``, the chain and the call).
    source_tokens, target_tokens : Tokens or None
        Token metadata of the two streams, where the trace had it.
    """

    source_map: torch.Tensor
    target_map: torch.Tensor | None
    source: str
    target: str
    method: str
    settings: dict = field(default_factory=dict)
    source_tokens: Tokens | None = None
    target_tokens: Tokens | None = None

    def save(self, path: str | Path) -> None:
        """Save the maps and settings with ``torch.save`` (tokens are not saved)."""
        torch.save({"source_map": self.source_map.detach().cpu(),
                    "target_map": None if self.target_map is None
                    else self.target_map.detach().cpu(),
                    "source": self.source, "target": self.target,
                    "method": self.method, "settings": self.settings}, Path(path))

    @classmethod
    def load(cls, path: str | Path) -> "Composition":
        """Read what :meth:`save` wrote."""
        data = torch.load(Path(path), weights_only=True)
        return cls(**data)


def _method(method, options: dict) -> Method:
    """A method object from a name and keyword options, or the object itself; an option
    the method does not take is a TypeError naming the method and its options."""
    if isinstance(method, Method):
        if options:
            raise TypeError(f"compose(): options {sorted(options)} go on the method"
                            f" object, e.g. {type(method).__name__}(...), not beside it")
        return method
    if isinstance(method, type) and issubclass(method, Method):
        return method.from_options(**options)
    if not isinstance(method, str) or method not in method_names():
        raise ValueError(f"method must be one of {method_names()} or a Method object,"
                         f" got {method!r}")
    return get_method(method).from_options(**options)


def _read_rows(rows, tokens: Tokens | None, t: int, batch: int) -> torch.Tensor | None:
    if rows is None:
        return None
    if isinstance(rows, str):
        if tokens is None or rows not in tokens.special:
            have = [] if tokens is None else list(tokens.special)
            raise ValueError(f"rows={rows!r}: the target tokens have no such position;"
                             f" known: {have}")
        return tokens.special[rows].long().view(batch, 1)
    if isinstance(rows, (int, np.integer)):
        rows = [int(rows)]
    elif not isinstance(rows, (torch.Tensor, list, tuple, range)):
        rows = torch.as_tensor(rows)
    return _check_rows(rows, batch, t, what="rows")


def _take(t: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor | None:
    return None if t is None else _take_rows(t, idx)


def _shift(t: torch.Tensor | None) -> torch.Tensor | None:
    """Row ``i`` <- row ``i + 1``; the last row (no later decoder input) becomes zero."""
    if t is None:
        return None
    out = torch.zeros_like(t)
    out[..., :-1, :] = t[..., 1:, :]
    return out


def _plain_rows(rows):
    if rows is None or isinstance(rows, str):
        return rows
    if isinstance(rows, torch.Tensor):
        return rows.tolist()
    return tuple(int(i) for i in ([rows] if isinstance(rows, int) else rows))


def compose(
    trace: Trace, *, source: str, target: str, method: str | Method = "rollout",
    rows=None, shift: bool = False, chain: Chain | None = None, call: int = -1,
    **options,
) -> Composition:
    """Target x source map through a model's encoder, cross-attention and decoder.

    Notation: ``Ã = rownorm((1 - r) A + r I)`` is a fused, residual-corrected
    self-attention layer, ``C`` a fused, row-normalised cross-attention layer
    (target queries x source keys), ``Ā = mean_h clamp(dS/dA * A, min=0)`` a
    gradient-weighted layer, ``R̄ = (R - I) / rowsum(R - I) + I``. Every step is a
    call into the rollout core; the methods (:mod:`groundroll.compose.methods`) say
    which layers go where:

    ``raw`` (:class:`~groundroll.compose.Raw`)
        ``M = mean_{l in layers} C^(l)``, the baseline; through pooling hops
        ``M = C_dec (C_pool)``; one stream: the fused self-attention of the chosen
        layers (the last by default).
    ``rollout`` (:class:`~groundroll.compose.Rollout`)
        Encoder rollout, then per decoder layer ``R_dec <- Ã_self R_dec`` and
        ``R_dec <- r R_dec + (1 - r) C [R_enc | 0]``. Rows of
        ``[source_map | target_map]`` sum to 1.
    ``relevance`` (:class:`~groundroll.compose.Relevance`)
        Chefer et al. (2021): ``R^ss += Ā R^ss``; per decoder layer ``R^tt += Ā R^tt``,
        ``R^ts += Ā R^ts`` and ``R^ts += (R̄^tt)^T Ā^ts R̄^ss``. Needs a trace captured
        with ``grads=True`` after ``backward()`` on one score.
    ``norm`` (:class:`~groundroll.compose.Norm`)
        ``raw`` with value-aware weights ``A_h[i, j] ||v_j W_O^h||``;
        ``weighting="norm"`` applies the same weights inside any other method. Both
        need a trace captured with ``values=True``.
    ``flow`` (:class:`~groundroll.compose.Flow`)
        Attention flow over the composed graph of :func:`joint_graph`. Exact but
        slow: for small inputs.

    Parameters
    ----------
    trace : Trace
        From :func:`groundroll.capture`.
    source, target : str
        Token streams, e.g. ``"encoder"``/``"decoder"``, ``"vision"``/``"decoder"``
        (CoCa), ``"vision"``/``"text"`` (BLIP), or one stream twice (dual encoders).
    method : str or Method
        A registered name (:data:`~groundroll.compose.METHODS`) with its options as
        keywords, or a method object carrying its options, e.g.
        ``Rollout(residual=0.3)``.
    rows : str, int or sequence, optional
        Read out only these target rows: a special position name such as ``"cls"`` or
        ``"eot"``, or indices (applied after ``shift``). Pruning keeps them.
    shift : bool
        Read target token ``t`` at the row where it is the decoder *input* (row ``t+1``
        under teacher forcing) instead of the row that predicts it; the last row
        becomes zero.
    chain : Chain, optional
        Streams to chain; found with :func:`chain_for` by default.
    call : int
        Which captured forward call to use (last by default).
    **options
        With a method name: that method's options (the fields of its class), such as
        ``layers``, ``heads``, ``head_fusion``, ``residual``, ``weighting``,
        ``per_head``, ``prune_threshold``, ``top_k``, ``start_layer``, ``transpose``,
        ``normalize``. An option the method does not take is a TypeError that names
        the method and the options it takes (``head_fusion`` means nothing to
        ``relevance``); :func:`~groundroll.compose.method_options` lists them.

    Returns
    -------
    Composition

    Examples
    --------
    One stream on its own is the core's rollout of its layers:

    >>> import torch
    >>> import groundroll as gr
    >>> from groundroll.trace import AttentionLayer, Trace
    >>> attn = [torch.softmax(torch.randn(1, 2, 4, 4), -1) for _ in range(3)]
    >>> trace = Trace()
    >>> for i, a in enumerate(attn):
    ...     trace.add(AttentionLayer(a, "self", "vision", "vision", "vision", i))
    >>> out = gr.compose(trace, source="vision", target="vision", rows=[0])
    >>> torch.allclose(out.source_map, gr.rollout(attn, rows=[0]), atol=1e-6)
    True

    Through a translation model's encoder, cross-attention and decoder:

    >>> with gr.capture(model) as trace:                                # doctest: +SKIP
    ...     model(input_ids=src, decoder_input_ids=tgt)
    >>> gr.compose(trace, source="encoder", target="decoder").source_map.shape
    ...                                                                 # doctest: +SKIP
    torch.Size([1, 7, 9])
    >>> from groundroll.compose import Rollout
    >>> gr.compose(trace, source="encoder", target="decoder",          # doctest: +SKIP
    ...            method=Rollout(residual=0.3, heads=[0, 1]))
    """
    m = _method(method, dict(options))
    chain = chain_for(trace, source, target) if chain is None else chain
    missing = [s for s in chain.streams if s not in trace.layers]
    if missing:
        raise ValueError(f"the trace lacks streams {missing} needed by {chain}")
    tgt_tokens = trace.tokens.get(chain.target)
    rows_layer = trace.stream(chain.target_cross or chain.source_self, call=call)[0]
    idx = _read_rows(rows, tgt_tokens, rows_layer.queries, rows_layer.batch)
    keep = None
    if idx is not None:  # pruning keeps the rows read out (row t + 1 when shifted)
        keep = (idx + 1).clamp(max=rows_layer.queries - 1) if shift else idx
    src_map, tgt_map = m.maps(trace, chain, call=call, keep=keep)
    if shift:
        src_map, tgt_map = _shift(src_map), _shift(tgt_map)
    if idx is not None:
        src_map, tgt_map = _take(src_map, idx), _take(tgt_map, idx)
    settings = dict(method=m.name, **m.settings(), shift=shift, rows=_plain_rows(rows),
                    chain=asdict(chain), call=call)
    return Composition(src_map, tgt_map, chain.source, chain.target, m.name, settings,
                       trace.tokens.get(chain.source), tgt_tokens)
