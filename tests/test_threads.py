"""One loaded model shared by threads: results equal the sequential run, the model is
left exactly as loaded (also when a call fails), hooks of one call never reach another.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

import groundroll as gr
from groundroll._locks import locked, model_lock
from groundroll.adapters import capture
from groundroll.data.shapes import EVAL_SEED_OFFSET, scenes
from groundroll.grounding import ModelHandle, resolve_model
from groundroll.grounding.dense import dense_rewrite
from groundroll.zoo import load

METHODS = ("relevance", "rollout", "maskclip", "sclip")
THREADS = 3


def model_state(model: torch.nn.Module) -> dict:
    """Everything a call could leave changed on a model, as comparable values."""
    state = {}
    for name, module in model.named_modules():
        state[name, "forward"] = module.__dict__.get("forward")
        state[name, "training"] = module.training
        for hooks in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                      "_backward_pre_hooks", "_forward_hooks_with_kwargs",
                      "_forward_pre_hooks_with_kwargs"):
            state[name, hooks] = len(getattr(module, hooks, {}) or {})
        config = getattr(module, "config", None)
        if config is not None:
            state[name, "attn"] = getattr(config, "_attn_implementation_internal", None)
    for name, p in model.named_parameters():
        state[name, "requires_grad"] = p.requires_grad
        state[name, "dtype"] = p.dtype
        state[name, "grad"] = p.grad is None
        state[name, "sum"] = float(p.detach().double().sum())
    return state


@pytest.fixture(scope="module")
def clip():
    return load("bundled:shapes-clip-short")


@pytest.fixture(scope="module")
def held_out():
    return list(scenes(THREADS, seed=EVAL_SEED_OFFSET + 7, size=(64, 80)))


def _segment(scene, model, method):
    return gr.segment(scene.image, scene.labels, model=model, method=method, mask_threshold=0.5)


@pytest.mark.parametrize("method", METHODS)
def test_threads_equal_the_sequential_run(clip, held_out, method):
    before = model_state(clip.model)
    sequential = [_segment(s, clip, method) for s in held_out]
    barrier = threading.Barrier(THREADS)

    def run(scene):
        barrier.wait()               # start together: the calls really overlap
        return [_segment(scene, clip, method) for _ in range(2)]

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(run, held_out))
    for seq, repeats in zip(sequential, results):
        for got in repeats:
            np.testing.assert_array_equal(got.labels, seq.labels)
            np.testing.assert_array_equal(got.heatmaps, seq.heatmaps)
            np.testing.assert_array_equal(got.scores, seq.scores)
    assert model_state(clip.model) == before


def test_shared_bundle_matches_a_fresh_one_after_concurrent_mixed_calls(clip, held_out):
    jobs = [(s, m) for s in held_out for m in METHODS]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda job: _segment(job[0], clip, job[1]), jobs))
    fresh = load("bundled:shapes-clip-short")
    for method in METHODS:
        a, b = _segment(held_out[0], clip, method), _segment(held_out[0], fresh, method)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.heatmaps, b.heatmaps)


class _FailingHandle(ModelHandle):
    """Pixels with two channels: the vision tower fails inside the model call, after
    capture hooks and dense rewrites are in place."""

    def pixels(self, images):
        return super().pixels(images)[:, :2]


@pytest.mark.parametrize("method", METHODS)
def test_a_thread_that_fails_mid_call_leaves_the_model_unchanged(clip, held_out, method):
    handle = resolve_model(clip)
    failing = _FailingHandle(handle.model, handle.tokenizer, handle.family, "failing")
    before = model_state(clip.model)
    expected = _segment(held_out[0], handle, method)
    barrier = threading.Barrier(2)

    def bad():
        barrier.wait()
        with pytest.raises(RuntimeError):
            _segment(held_out[1], failing, method)

    def good():
        barrier.wait()
        return _segment(held_out[0], handle, method)

    with ThreadPoolExecutor(2) as pool:
        f_bad, f_good = pool.submit(bad), pool.submit(good)
        f_bad.result()
        got = f_good.result()
    np.testing.assert_array_equal(got.labels, expected.labels)
    np.testing.assert_array_equal(got.heatmaps, expected.heatmaps)
    assert model_state(clip.model) == before


def test_dense_rewrite_leaves_forward_alone_and_other_threads_see_the_stock_block(clip):
    model = clip.model
    block = model.visual.transformer.resblocks[-1]
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        stock = model.encode_image(x)
    seen = {}
    with torch.no_grad(), dense_rewrite(model, "maskclip"):
        assert "forward" not in block.__dict__
        rewritten = model.encode_image(x)

        def plain_call():                 # grad mode is per thread
            with torch.no_grad():
                seen["y"] = model.encode_image(x)

        worker = threading.Thread(target=plain_call)
        worker.start()
        worker.join()
    assert not torch.equal(rewritten, stock)
    assert torch.equal(seen["y"], stock)
    with torch.no_grad():
        assert torch.equal(model.encode_image(x), stock)


def test_a_capture_waits_for_another_threads_capture_on_the_same_model(clip):
    model = clip.model
    order = []
    inside = threading.Event()

    def second():
        inside.wait()
        with capture(model, streams="vision"):
            order.append("second")

    worker = threading.Thread(target=second)
    worker.start()
    with capture(model, streams="vision") as trace:
        inside.set()
        worker.join(timeout=0.3)
        assert worker.is_alive()          # blocked on the model's lock
        with torch.no_grad():
            model.encode_image(torch.randn(1, 3, 96, 96))
        order.append("first")
    worker.join()
    assert order == ["first", "second"]
    assert len(trace.layers["vision"]) == 4


def test_locks_are_per_model_and_reentrant():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    assert model_lock(a) is model_lock(a) and model_lock(a) is not model_lock(b)
    done = []

    def other_thread():
        for lock, timeout in ((model_lock(b), 5), (model_lock(a), 0.1)):
            got = lock.acquire(timeout=timeout)
            done.append(got)
            if got:
                lock.release()

    with locked(a), locked(a):            # the same thread may enter again
        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
    assert done == [True, False]          # another model free, this one held


# ----------------------------------------------------------------------------- align


@pytest.fixture(scope="module")
def mt():
    return load("bundled:toy-mt")


@pytest.mark.parametrize("method", ["raw", "rollout", "relevance"])
def test_align_threads_equal_the_sequential_run(mt, method):
    from groundroll.data import toy_translation as toy

    pairs = toy.pairs(THREADS * 2, split="test")
    before = model_state(mt.model)

    def one(p):
        return gr.align(" ".join(p.src_words), " ".join(p.tgt_words), model=mt,
                        method=method)

    sequential = [one(p) for p in pairs]
    with ThreadPoolExecutor(THREADS) as pool:
        concurrent = list(pool.map(one, pairs))
    for a, b in zip(sequential, concurrent):
        assert a.links == b.links
        np.testing.assert_array_equal(a.matrix, b.matrix)
    assert model_state(mt.model) == before


def test_named_models_load_once_per_process():
    from groundroll.zoo import cached

    with ThreadPoolExecutor(3) as pool:
        bundles = list(pool.map(lambda _: cached("bundled:toy-mt"), range(3)))
    assert all(b is bundles[0] for b in bundles)
    a = gr.align("a b", "c d", model="bundled:toy-mt")
    assert a.settings["model"] == "bundled:toy-mt"
    assert cached("bundled:toy-mt") is bundles[0]


def test_layer_scan_threads_equal_the_sequential_run(mt):
    from groundroll.data import toy_translation as toy

    pairs = toy.pairs(4, split="test")
    before = model_state(mt.model)

    def scan(_):
        return gr.layer_scan(pairs, model=mt, methods=("raw", "rollout"),
                             shifts=(False,)).rows

    expected = scan(None)
    with ThreadPoolExecutor(2) as pool:
        for rows in pool.map(scan, range(2)):
            assert [(r["method"], r["layer"], r["aer"]) for r in rows] == [
                (r["method"], r["layer"], r["aer"]) for r in expected]
    assert model_state(mt.model) == before
