"""Capture of vision towers that attend image by image and return no weights.

Qwen2-VL's vision tower and the towers built like it (Qwen2.5-VL, Qwen3-VL, GLM-4V, ...)
take a flat ``[patches, dim]`` sequence and, under eager attention, run one softmax per
image (or per window) between the ``cu_seqlens`` boundaries. The capture places those
softmaxes on the diagonal of one ``[1, head, N, N]`` matrix. Checked here against a
naive per-image recomputation from the module's hooked inputs, against the module's own
values and output projection (the conformance reference), for block structure (two
images of different grids; Qwen2.5-VL's windowed and full layers), outputs, cleanup after
an exception raised inside the attention, and gradients.
"""

from __future__ import annotations

import importlib

import pytest
import torch

pytest.importorskip("transformers")

from groundroll.adapters import adapter_for, capture  # noqa: E402
from groundroll.adapters import conformance  # noqa: E402
from groundroll.adapters.capture import _SoftmaxRecorder  # noqa: E402
from groundroll.compose import compose  # noqa: E402

ATOL = 1e-5

#: Two images: 4 x 4 and 4 x 6 patches (2 x 2 and 2 x 3 merged tokens).
GRIDS = [[1, 4, 4], [1, 4, 6]]


def _tower(model_type: str, cls: str, **vision):
    """A tiny vision tower of ``model_type`` with eager attention, in eval mode."""
    config = conformance.tiny_config(model_type).vision_config
    for key, value in vision.items():
        setattr(config, key, value)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    module = importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")
    return getattr(module, cls)(config).eval()


def _patches(model, grids) -> dict:
    """Random flat patches for images of ``grids`` (frames, rows, cols)."""
    config = model.config
    width = config.in_channels * config.temporal_patch_size * config.patch_size ** 2
    count = sum(t * h * w for t, h, w in grids)
    generator = torch.Generator().manual_seed(1)
    return dict(hidden_states=torch.randn(count, width, generator=generator),
                grid_thw=torch.tensor(grids))


def _bounds(sizes) -> list[tuple[int, int]]:
    starts = [0] + list(torch.tensor(sizes).cumsum(0)[:-1].tolist())
    return [(s, s + n) for s, n in zip(starts, sizes)]


def _assert_block_diagonal(weights, sizes):
    """Rows sum to 1, each block's rows sum to 1 inside it, zeros between blocks."""
    n = weights.shape[-1]
    assert sum(sizes) == n
    assert torch.allclose(weights.sum(-1), torch.ones(()), atol=ATOL)
    inside = torch.zeros(n, n, dtype=torch.bool)
    for start, end in _bounds(sizes):
        inside[start:end, start:end] = True
        block = weights[..., start:end, start:end]
        assert torch.allclose(block.sum(-1), torch.ones(()), atol=ATOL)
    assert bool((weights[..., ~inside] == 0).all())


def _hook_inputs(model, name: str) -> tuple[list, list]:
    """Record the attention modules' keyword inputs (hidden states, rotary tables)."""
    calls, handles = [], []
    for module_name, module in model.named_modules():
        if module_name.endswith(name):
            handles.append(module.register_forward_pre_hook(
                lambda m, args, kwargs: calls.append((m, args, kwargs)), with_kwargs=True))
    return calls, handles


def _naive(module, hidden, position_embeddings, sizes) -> torch.Tensor:
    """Qwen2-VL vision attention probabilities recomputed image by image from the
    module's input: ``softmax(q k^T / sqrt(d))`` per head within each image, placed
    on the diagonal of ``[1, head, N, N]``."""
    from transformers.models.qwen2_vl.modeling_qwen2_vl import apply_rotary_pos_emb_vision

    n, heads = hidden.shape[0], module.num_heads
    q, k, _ = module.qkv(hidden).reshape(n, 3, heads, -1).permute(1, 0, 2, 3).unbind(0)
    q, k = apply_rotary_pos_emb_vision(q, k, *position_embeddings)   # [N, head, dim]
    out = torch.zeros(1, heads, n, n)
    for start, end in _bounds(sizes):
        qi, ki = q[start:end].transpose(0, 1), k[start:end].transpose(0, 1)
        scores = qi @ ki.transpose(-1, -2) * module.head_dim ** -0.5
        out[0, :, start:end, start:end] = scores.softmax(-1)
    return out


def test_qwen2_vl_two_images_of_different_grids_give_one_block_per_image():
    model = _tower("qwen2_vl", "Qwen2VisionTransformerPretrainedModel")
    inputs = _patches(model, GRIDS)
    sizes = [t * h * w for t, h, w in GRIDS]
    assert adapter_for(model).sites[0].reader == "chunked"
    with torch.no_grad():
        plain = model(**inputs)
    calls, handles = _hook_inputs(model, "attn")
    try:
        with torch.no_grad(), capture(model, values=True) as trace:
            out = model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    # outputs bit-identical (the tower already runs eager attention)
    assert torch.equal(out.last_hidden_state, plain.last_hidden_state)
    assert torch.equal(out.pooler_output, plain.pooler_output)
    [stream] = trace.streams
    layers = trace.stream(stream)
    assert len(layers) == len(calls) == model.config.depth
    assert trace.tokens[stream].length == sum(sizes)
    for layer, (module, args, kwargs) in zip(layers, calls):
        assert layer.weights.shape == (1, model.config.num_heads, sum(sizes), sum(sizes))
        _assert_block_diagonal(layer.weights, sizes)
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        want = _naive(module, hidden, kwargs["position_embeddings"], sizes)
        assert torch.allclose(layer.weights, want, atol=ATOL)
        # value norms ||v_j W_O^h|| from the flat [N, dim] input
        heads, dim = module.num_heads, module.head_dim
        v = module.qkv(hidden)[:, 2 * heads * dim:].reshape(-1, heads, dim)
        w_o = module.proj.weight.reshape(-1, heads, dim)
        norms = torch.einsum("khd,ohd->hko", v, w_o).norm(dim=-1)
        assert torch.allclose(layer.value_norms[0], norms, atol=ATOL)


def test_qwen2_5_vl_windowed_and_full_layers_keep_the_models_token_order():
    """Layer 0 attends within 2 x 2 merged-token windows (16 patches), layer 1 over each
    image; both over the window-ordered sequence the tower's blocks see."""
    model = _tower("qwen2_5_vl", "Qwen2_5_VisionTransformerPretrainedModel",
                   depth=2, window_size=32, fullatt_block_indexes=[1])
    grids = [[1, 8, 8], [1, 4, 4]]
    inputs = _patches(model, grids)
    with torch.no_grad():
        plain = model(**inputs)
    with torch.no_grad(), capture(model) as trace:
        out = model(**inputs)
    assert torch.equal(out.pooler_output, plain.pooler_output)
    [stream] = trace.streams
    windowed, full = trace.weights(stream)
    # the 8 x 8 image is 4 x 4 merged tokens: four windows; the 4 x 4 image is one
    _assert_block_diagonal(windowed, [16] * 5)
    _assert_block_diagonal(full, [64, 16])
    checked, problems = conformance._chunked_reference(model, inputs)
    assert (checked, problems) == (2, [])


@pytest.mark.parametrize("model_type", ["qwen2_vl", "glm4v"])
def test_full_model_is_captured_and_checked_against_its_values(model_type):
    model, inputs = conformance.tiny_hf(model_type)
    result = conformance.check(model, inputs, name=model_type)
    assert result.status == "captured", result.detail
    assert "vision" in result.streams
    with torch.no_grad(), capture(model, streams="vision") as trace:
        model(**inputs)
    sizes = [int(t * h * w) for t, h, w in inputs["image_grid_thw"]]
    for weights in trace.weights("vision"):
        _assert_block_diagonal(weights, sizes)


def test_the_conformance_reference_catches_weights_that_are_not_the_models():
    """Uniform weights inside each chunk: rows still sum to 1 and the blocks are right,
    but they do not reproduce the output projection's input."""
    model = _tower("qwen2_vl", "Qwen2VisionTransformerPretrainedModel")
    inputs = _patches(model, GRIDS)
    assert conformance._chunked_reference(model, inputs) == (2, [])
    original = _SoftmaxRecorder.__torch_function__

    def uniform(self, func, types, args=(), kwargs=None):
        out = original(self, func, types, args, kwargs)
        if self.found and self.found[-1] is out:
            self.found[-1] = torch.full_like(out, 1 / out.shape[-1])
        return out

    _SoftmaxRecorder.__torch_function__ = uniform
    try:
        checked, problems = conformance._chunked_reference(model, inputs)
    finally:
        _SoftmaxRecorder.__torch_function__ = original
    assert checked == 2 and "output projection" in problems[0]


def _state(model):
    return (conformance._hook_state(model), conformance._settings(model),
            torch._C._len_torch_function_stack())


def test_an_exception_inside_the_attention_leaves_nothing_patched():
    model = _tower("qwen2_vl", "Qwen2VisionTransformerPretrainedModel")
    model.config._attn_implementation = "sdpa"      # the capture switches it to eager
    inputs = _patches(model, GRIDS)
    before = _state(model)

    def fail(module, args):
        raise RuntimeError("inside the attention")

    # raised while the softmax recorder of blocks.1.attn is active
    handle = model.blocks[1].attn.proj.register_forward_pre_hook(fail)
    try:
        with pytest.raises(RuntimeError, match="inside the attention"):
            with torch.no_grad(), capture(model):
                model(**inputs)
    finally:
        handle.remove()
    assert _state(model) == before
    with torch.no_grad(), capture(model) as trace:     # and the next capture reads
        model(**inputs)
    assert len(trace) == model.config.depth


def test_gradients_reach_the_chunks_the_model_used_and_relevance_runs():
    model = _tower("qwen2_vl", "Qwen2VisionTransformerPretrainedModel")
    inputs = _patches(model, GRIDS)
    sizes = [t * h * w for t, h, w in GRIDS]
    with torch.enable_grad(), capture(model, grads=True) as trace:
        score = model(**inputs).pooler_output[1].sum()
        trace.backward(score)
    # reference: d(score)/d(every softmax of the forward), placed block by block
    recorder = _SoftmaxRecorder()
    with recorder:
        score = model(**inputs).pooler_output[1].sum()
    grads = torch.autograd.grad(score, recorder.found)
    [stream] = trace.streams
    layers = trace.stream(stream)
    assert len(grads) == len(sizes) * len(layers)
    for index, layer in enumerate(layers):
        assert layer.grad is not None and layer.grad.shape == layer.weights.shape
        want = torch.zeros_like(layer.weights)
        chunks = grads[index * len(sizes):(index + 1) * len(sizes)]
        for (start, end), g in zip(_bounds(sizes), chunks):
            want[..., start:end, start:end] = g
        assert torch.allclose(layer.grad, want, atol=1e-6)
        assert float(layer.grad.abs().sum()) > 0
    relevance = compose(trace, source=stream, target=stream, method="relevance")
    assert relevance.source_map.shape[-1] == sum(sizes)
    assert torch.isfinite(relevance.source_map).all()
    # no relevance crosses between the images; the score (merged token 1, of the first
    # image) depends on the first image only, so the second's rows stay the identity
    m = relevance.source_map[0]
    first, second = slice(0, sizes[0]), slice(sizes[0], None)
    assert float(m[first, second].abs().sum()) == float(m[second, first].abs().sum()) == 0
    assert torch.equal(m[second, second], torch.eye(sizes[1]))
    assert float((m[first, first] - torch.eye(sizes[0])).abs().sum()) > 0
