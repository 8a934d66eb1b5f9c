"""Speed and agreement of the rollout core against straightforward baselines (CPU).

1. Rows-only rollout (the CLS row, ``rollout(layers, rows=[0])``) against a
   store-everything loop that keeps all L layers' per-head weights, fuses heads and
   multiplies full ``N x N`` matrices, at ViT sizes N = 197, 577, 1025, 2305
   (L = 12, H = 12, batch 1), and against one read of its input (``a.sum()`` of every
   layer's ``[batch, head, N, N]`` weights): "input reads" is the rows-only time over
   that read's. Agreement: both float32 results against a float64 run of the same
   store-everything loop. A second table times the product stage alone
   from already fused ``[batch, N, N]`` layers (what a streaming capture hands over).
2. ``attention_flow`` (scipy integer max flow) against networkx Edmonds-Karp with float
   capacities, N = 16 and 32, L = 12. networkx on all N^2 pairs takes far too long, so
   it runs on whole sampled output rows; its all-pairs time is extrapolated from the
   mean time per sampled pair (labelled as such). Values are compared on those rows
   after the same row normalisation. The networkx graph is built once per size and
   its construction is not counted.

Attention: softmax of seeded random logits. Times: medians of repeats interleaved
between the two methods, so that machine load hits both alike. torch runs on one
thread (``--threads`` to change): on a shared machine, multi-threaded kernels waiting
on busy cores make timings meaningless.

Usage: ``python benchmarks/bench_rollout.py [--threads 1] [--sizes 197 577 1025 2305]
[--flow-sizes 16 32] [--no-flow] [--json out.json]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import networkx as nx
import torch

from groundroll.rollout import attention_flow, fuse_heads, residual_correct, rollout

SEED = 0
LAYERS, HEADS = 12, 12
ROLLOUT_SIZES = {197: 7, 577: 5, 1025: 9, 2305: 2}  # N: repeats (the target size: more)
FLOW_SIZES = {16: [0, 8], 32: [0]}  # N: sampled output rows for networkx
FLOW_REPEATS = 3


def random_attention(n: int, *, seed: int, layers: int = LAYERS, heads: int = HEADS):
    gen = torch.Generator().manual_seed(seed)
    return [torch.softmax(2 * torch.randn(1, heads, n, n, generator=gen), -1)
            for _ in range(layers)]


def interleaved(functions: dict, repeats: int) -> dict:
    """Median seconds per function, repeats alternating between functions."""
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def store_everything(layers, *, residual=0.5, dtype=torch.float32, fused=False):
    """Baseline: fuse each stored layer, correct, multiply full matrices; CLS row."""
    n = layers[0].shape[-1]
    eye = torch.eye(n, dtype=dtype)
    product = None
    for attn in layers:
        a = attn.to(dtype)
        a = a if fused else a.mean(1)
        a = (1 - residual) * a + residual * eye
        a = a / a.sum(-1, keepdim=True)
        product = a if product is None else a @ product
    return product[:, :1]


def one_read(layers) -> None:
    for attn in layers:
        attn.sum()


def bench_rollout(sizes=ROLLOUT_SIZES, results=None) -> None:
    print("### Rows-only rollout (CLS row) vs store-everything full products\n")
    print(f"L={LAYERS}, H={HEADS}, batch 1, float32; torch threads"
          f" {torch.get_num_threads()}; load average before: {os.getloadavg()[0]:.1f}\n")
    print("| N | rows-only ms | one read of the input ms | input reads |"
          " store-everything ms | speed-up |"
          " max abs diff rows-only vs f64 | max abs diff store-everything vs f64 |")
    print("|---|---|---|---|---|---|---|---|")
    fused_rows, targets = [], []
    for n, repeats in sizes.items():
        layers = random_attention(n, seed=SEED + n)
        fast = rollout(layers, rows=[0])
        slow = store_everything(layers)
        reference = store_everything(layers, dtype=torch.float64)
        diff_fast = (fast.double() - reference).abs().max().item()
        diff_slow = (slow.double() - reference).abs().max().item()
        t = interleaved({"rows": lambda layers=layers: rollout(layers, rows=[0]),
                         "read": lambda layers=layers: one_read(layers),
                         "full": lambda layers=layers: store_everything(layers)},
                        max(repeats, 3))
        print(f"| {n} | {t['rows'] * 1e3:.1f} | {t['read'] * 1e3:.1f} |"
              f" {t['rows'] / t['read']:.2f} | {t['full'] * 1e3:.1f} |"
              f" {t['full'] / t['rows']:.1f}x | {diff_fast:.1e} | {diff_slow:.1e} |",
              flush=True)
        if results is not None:
            results.append({"n": n, "rows_only_ms": round(t["rows"] * 1e3, 2),
                            "one_read_ms": round(t["read"] * 1e3, 2),
                            "input_reads": round(t["rows"] / t["read"], 2),
                            "store_everything_ms": round(t["full"] * 1e3, 2),
                            "speed_up": round(t["full"] / t["rows"], 2),
                            "max_abs_diff_rows_only": diff_fast})
        if n == 1025:
            targets.append(f"At N = 1025 (target: <= 2 input reads and >= 4x the"
                           f" store-everything loop): {t['rows'] / t['read']:.2f} input reads,"
                           f" {t['full'] / t['rows']:.1f}x.")
        fused = [attn.mean(1) for attn in layers]
        del layers
        t = interleaved({"rows": lambda fused=fused: rollout(fused, rows=[0]),
                         "full": lambda fused=fused: store_everything(fused, fused=True)},
                        repeats)
        diff = (rollout(fused, rows=[0]) - store_everything(fused, fused=True)).abs().max()
        fused_rows.append(f"| {n} | {t['rows'] * 1e3:.2f} | {t['full'] * 1e3:.1f} |"
                          f" {t['full'] / t['rows']:.0f}x | {diff.item():.1e} |")
        del fused
    print("\n### Product stage only, from fused [batch, N, N] layers\n")
    print("| N | rows-only ms | full products ms | speed-up | max abs diff (float32) |")
    print("|---|---|---|---|---|")
    print("\n".join(fused_rows), flush=True)
    for line in targets:
        print(f"\n{line}", flush=True)


def networkx_rows(layers, rows, *, residual=0.5):
    """Edmonds-Karp flows on float capacities for whole output rows; seconds per pair."""
    mats = [residual_correct(fuse_heads(a), residual)[0].double().tolist() for a in layers]
    depth, n = len(mats), len(mats[0])
    graph = nx.DiGraph()
    for level in range(1, depth + 1):
        for i in range(n):
            for j in range(n):
                graph.add_edge((level, i), (level - 1, j), capacity=mats[level - 1][i][j])
    flows = torch.zeros(1, len(rows), n, dtype=torch.float64)
    start = time.perf_counter()
    for r, i in enumerate(rows):
        for j in range(n):
            flows[0, r, j] = nx.maximum_flow_value(
                graph, (depth, i), (0, j), flow_func=nx.algorithms.flow.edmonds_karp)
    per_pair = (time.perf_counter() - start) / (len(rows) * n)
    return flows / flows.sum(-1, keepdim=True), per_pair


def bench_flow(sizes=FLOW_SIZES) -> None:
    print("\n### attention_flow (scipy) vs networkx Edmonds-Karp\n")
    print(f"L={LAYERS}, H={HEADS}, batch 1; load average before:"
          f" {os.getloadavg()[0]:.1f}\n")
    print("| N | scipy all pairs s | scipy per pair ms | networkx per pair ms"
          " (sampled) | networkx all pairs s (extrapolated) | speed-up |"
          " max abs diff (sampled rows) |")
    print("|---|---|---|---|---|---|---|")
    for n, rows in sizes.items():
        layers = random_attention(n, seed=SEED + n)
        attention_flow(layers, rows=rows)  # warm up scipy imports
        times = [0.0] * FLOW_REPEATS
        for k in range(FLOW_REPEATS):
            start = time.perf_counter()
            attention_flow(layers)
            times[k] = time.perf_counter() - start
        scipy_all = statistics.median(times)
        reference, nx_pair = networkx_rows(layers, rows)
        diff = (attention_flow(layers, rows=rows).double() - reference).abs().max().item()
        pairs = n * n
        print(f"| {n} | {scipy_all:.2f} | {scipy_all / pairs * 1e3:.3f} |"
              f" {nx_pair * 1e3:.0f} ({len(rows) * n} pairs) | {nx_pair * pairs:.0f} |"
              f" {nx_pair * pairs / scipy_all:.0f}x | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(ROLLOUT_SIZES),
                        help="token counts N of the rollout tables")
    parser.add_argument("--no-flow", action="store_true", help="skip attention_flow")
    parser.add_argument("--flow-sizes", type=int, nargs="+", default=list(FLOW_SIZES),
                        help="token counts N of the attention_flow table")
    parser.add_argument("--json", default=None, help="also write the rollout rows here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows: list = []
    bench_rollout({n: ROLLOUT_SIZES.get(n, 3) for n in args.sizes}, rows)
    if not args.no_flow:
        bench_flow({n: FLOW_SIZES.get(n, [0]) for n in args.flow_sizes})
    if args.json:
        import json

        with open(args.json, "w") as f:
            f.write(json.dumps({"threads": args.threads, "rows": rows}, indent=2) + "\n")
    print(f"\n(total {time.perf_counter() - start:.0f} s)")
