import pytest
import torch

from groundroll.trace import AttentionLayer, Tokens, Trace


def _layer(stream, index, call=0, n=3):
    w = torch.softmax(torch.randn(1, 2, n, n), -1)
    return AttentionLayer(w, "self", stream, stream, stream, index, call=call)


def test_stream_returns_last_call_sorted_by_index():
    trace = Trace()
    for call in range(2):
        for index in (1, 0):
            trace.add(_layer("encoder", index, call))
    assert trace.calls("encoder") == 2
    layers = trace.stream("encoder")
    assert [(l.call, l.index) for l in layers] == [(1, 0), (1, 1)]
    assert [(l.call, l.index) for l in trace.stream("encoder", call=0)] == [(0, 0), (0, 1)]
    assert len(trace) == 4


def test_missing_stream_and_grads_explain_themselves():
    trace = Trace()
    trace.add(_layer("vision", 0))
    with pytest.raises(KeyError, match="captured streams"):
        trace.stream("text")
    with pytest.raises(ValueError, match="grads=True"):
        trace.grads("vision")


def test_layer_rejects_bad_shape_and_kind():
    with pytest.raises(ValueError, match="batch, head, query, key"):
        AttentionLayer(torch.ones(2, 2), "self", "s", "s", "s", 0)
    with pytest.raises(ValueError, match="kind"):
        AttentionLayer(torch.ones(1, 1, 2, 2), "both", "s", "s", "s", 0)


def test_tokens_patches_and_lengths():
    tokens = Tokens(length=1 + 2 * 3, grid=(2, 3), prefix=1,
                    mask=torch.tensor([[True] * 7, [True] * 5 + [False] * 2]))
    assert tokens.patches == slice(1, 7)
    assert tokens.lengths().tolist() == [7, 5]
    with pytest.raises(ValueError):
        Tokens(length=4).patches
