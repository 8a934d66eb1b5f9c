"""Input checks shared by the rollout core: tensors, layer lists, rows and options.

Every check raises :class:`ValueError` with a message that names the layer (or the
argument) and says what was expected.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch

HeadFusion = Union[str, torch.Tensor]
Rows = Union[Sequence[int], torch.Tensor, None]

_FUSIONS = ("mean", "max", "min")
_INT32_MAX = 2**31 - 1


# --------------------------------------------------------------------------- checks


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _where(index: int | None, what: str) -> str:
    return what if index is None else f"{what} {index}"


def _check_tensor(
    t, index: int | None = None, *, what: str = "layer", ranks=(3, 4),
    square: bool = False, nonnegative: bool = True, shape_hint: str = "",
    scan: bool = True,
) -> torch.Tensor:
    """Validate one tensor and return it as float32 (or float64).

    ``scan=False`` checks only type, rank and shape; the caller then scans the values
    with :func:`_scan_values` (the rows-only path does it block by block)."""
    where = _where(index, what)
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{where}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dim() not in ranks:
        hint = shape_hint or " or ".join(
            {2: "[query, key]", 3: "[batch, query, key]", 4: "[batch, head, query, key]"}[r]
            for r in ranks
        )
        raise ValueError(f"{where}: wrong rank, expected {hint}, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{where}: empty tensor of shape {tuple(t.shape)}")
    x = t.to(_compute_dtype(t))
    if scan:
        _scan_values(x, where, nonnegative=nonnegative)
    if square and x.shape[-1] != x.shape[-2]:
        raise ValueError(
            f"{where}: self-attention must be square, got query={x.shape[-2]}"
            f" key={x.shape[-1]}"
        )
    return x


def _scan_values(x: torch.Tensor, where: str, *, nonnegative: bool = True) -> None:
    """Raise for NaN/inf (and negative entries when ``nonnegative``)."""
    # NaN propagates to both ends and inf shows at one; two plain reductions are
    # faster than aminmax on CPU
    x = x.detach()
    low, high = float(x.amin()), float(x.amax())
    if not (np.isfinite(low) and np.isfinite(high)):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{where}: contains NaN or inf ({bad} entries)")
    if nonnegative and low < 0:
        raise ValueError(f"{where}: negative attention weights (min {low:.3g})")


def _check_layers(
    attentions, grads=None, *, per_head: bool = False, scan: bool = True,
    nonnegative: bool = True,
) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    """Validate a first-to-last list of self-attention layers (and optional grads).

    ``scan=False`` leaves the value checks (NaN/inf, negatives) to the caller;
    ``nonnegative=False`` checks NaN/inf only."""
    if isinstance(attentions, torch.Tensor):
        raise ValueError(
            "attentions must be a sequence of per-layer tensors, first layer first;"
            f" got a single tensor of shape {tuple(attentions.shape)}"
        )
    attentions = list(attentions)
    if not attentions:
        raise ValueError("attentions is empty: need at least one layer")
    layers: list[torch.Tensor] = []
    for index, attn in enumerate(attentions):
        a = _check_tensor(attn, index, square=True, scan=scan, nonnegative=nonnegative)
        if per_head and a.dim() != 4:
            raise ValueError(
                f"layer {index}: per_head=True needs [batch, head, query, key] weights,"
                f" got shape {tuple(a.shape)}"
            )
        if layers:
            first = layers[0]
            if a.shape[-1] != first.shape[-1]:
                raise ValueError(
                    f"layer {index}: mismatched N between layers, N={a.shape[-1]} but"
                    f" layer 0 has N={first.shape[-1]}"
                )
            if a.shape[0] != first.shape[0]:
                raise ValueError(
                    f"layer {index}: mismatched batch between layers, batch={a.shape[0]}"
                    f" but layer 0 has batch={first.shape[0]}"
                )
            if per_head and a.shape[1] != first.shape[1]:
                raise ValueError(
                    f"layer {index}: per_head=True needs the same number of heads in"
                    f" every layer, got {a.shape[1]} but layer 0 has {first.shape[1]}"
                )
        layers.append(a)
    if grads is None:
        return layers, [None] * len(layers)
    grads = list(grads)
    if len(grads) != len(layers):
        raise ValueError(
            f"grads has {len(grads)} entries but there are {len(layers)} layers"
        )
    checked = [_check_grad(g, a, i) for i, (g, a) in enumerate(zip(grads, layers))]
    return layers, checked


def _check_grad(grad, attn: torch.Tensor, index: int | None) -> torch.Tensor | None:
    if grad is None:
        return None
    g = _check_tensor(grad, index, what="grad of layer" if index is not None else "grad",
                      ranks=(attn.dim(),), nonnegative=False)
    if g.shape != attn.shape:
        raise ValueError(
            f"{_where(index, 'layer')}: grad shape {tuple(g.shape)} does not match"
            f" weights shape {tuple(attn.shape)}"
        )
    return g.to(attn.dtype)


def _check_fusion(how: HeadFusion) -> HeadFusion:
    if isinstance(how, torch.Tensor):
        w = _check_tensor(how, what="head weights", ranks=(1,),
                          shape_hint="[head]")
        if float(w.detach().sum()) <= 0:
            raise ValueError("head weights: must not all be zero")
        return w
    if how not in _FUSIONS:
        raise ValueError(
            "head_fusion must be 'mean', 'max', 'min' or a [head] weight tensor,"
            f" got {how!r}"
        )
    return how


def _check_options(
    *, residual: float = 0.5, prune_threshold=None, top_k=None, discard_ratio=None,
    start_layer: int = 0,
) -> None:
    if not 0.0 <= float(residual) <= 1.0:
        raise ValueError(f"residual must be in [0, 1], got {residual}")
    if prune_threshold is not None and not np.isfinite(float(prune_threshold)):
        raise ValueError(f"prune_threshold must be a finite number, got {prune_threshold}")
    if top_k is not None and (isinstance(top_k, bool) or int(top_k) != top_k or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1, got {top_k}")
    if discard_ratio is not None and not 0.0 <= float(discard_ratio) < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
    if isinstance(start_layer, bool) or int(start_layer) != start_layer or start_layer < 0:
        raise ValueError(f"start_layer must be an integer >= 0, got {start_layer}")


def _check_rows(rows: Rows, batch: int, n: int, *, what: str = "rows") -> torch.Tensor:
    """Return read-out positions as a ``[batch, R]`` long tensor."""
    if isinstance(rows, torch.Tensor):
        if rows.dtype.is_floating_point or rows.dtype == torch.bool or rows.is_complex():
            raise ValueError(f"{what} must hold integer positions, got dtype {rows.dtype}")
        if rows.dim() == 1:
            idx = rows.long().unsqueeze(0).expand(batch, -1)
        elif rows.dim() == 2:
            if rows.shape[0] != batch:
                raise ValueError(
                    f"{what}: [batch, R] tensor has batch {rows.shape[0]} but the"
                    f" attention has batch {batch}"
                )
            idx = rows.long()
        else:
            raise ValueError(
                f"{what} must be a list of positions, a [R] or a [batch, R] tensor,"
                f" got shape {tuple(rows.shape)}"
            )
    elif isinstance(rows, (list, tuple, range)):
        if not all(isinstance(r, (int, np.integer)) and not isinstance(r, bool)
                   for r in rows):
            raise ValueError(f"{what} must hold integer positions, got {list(rows)!r}")
        idx = torch.tensor(list(rows), dtype=torch.long).unsqueeze(0).expand(batch, -1)
    else:
        raise ValueError(
            f"{what} must be a list of positions or a [batch, R] tensor,"
            f" got {type(rows).__name__}"
        )
    if idx.shape[1] == 0:
        raise ValueError(f"{what} is empty")
    bad = (idx < 0) | (idx >= n)
    if bool(bad.any()):
        raise ValueError(
            f"{what} out of range: position {int(idx[bad][0])} not in [0, {n})"
        )
    return idx


def _check_head_weights(how: HeadFusion, attn: torch.Tensor, index: int) -> None:
    if isinstance(how, torch.Tensor) and attn.dim() == 4 and how.numel() != attn.shape[1]:
        raise ValueError(
            f"layer {index}: head weights have length {how.numel()} but the layer has"
            f" {attn.shape[1]} heads"
        )

