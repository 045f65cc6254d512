"""The column-block engine behind the Gram and the combination, and streaming updates.

Every result is checked against the definition computed the plain way (flatten, stack, two matmuls in fp64).
"""

import pytest
import torch

from fedbip_nvflare.core import StreamedUpdates, combine, fedbip_aggregate, personalized_aggregate
from fedbip_nvflare.core import blocks as blocks_module
from fedbip_nvflare.core.blocks import ColumnBlocks, flat_outputs, plan_blocks
from fedbip_nvflare.core.memory import advise_huge_pages
from fedbip_nvflare.core.similarity import gram_matrices


def _vectors(n, shapes, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        f"site-{i}": {name: torch.randn(shape, generator=g).to(dtype) for name, shape in shapes.items()}
        for i in range(n)
    }


SHAPES = {
    "layers.0.q.lora_A": (4, 10),
    "layers.0.q.lora_B": (10, 4),
    "layers.1.q.lora_A": (4, 10),
    "layers.1.q.lora_B": (10, 4),
    "layers.1.big": (300,),
    "head.bias": (3,),
}


def _stacked(vectors):
    return torch.stack([torch.cat([t.reshape(-1).double() for t in v.values()]) for v in vectors.values()])


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 64 columns, so tensors are packed, split and groups cut even with these small shapes."""
    monkeypatch.setattr(blocks_module, "MIN_BLOCK_COLUMNS", 64)
    monkeypatch.setattr(blocks_module, "BLOCK_BYTES", 64 * 4 * 3)


def test_plan_packs_whole_tensors_splits_large_ones_and_respects_groups():
    ref = {name: torch.zeros(shape) for name, shape in SHAPES.items()}
    names = list(ref)
    blocks = plan_blocks(ref, names, None, 64)
    assert all(b.width <= 64 for b in blocks)
    covered = {}
    for b in blocks:
        for s in b.segments:
            covered.setdefault(names[s.index], []).append((s.start, s.stop))
    for name, t in ref.items():  # every column exactly once, in order
        spans = sorted(covered[name])
        assert spans[0][0] == 0 and spans[-1][1] == t.numel()
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert len(covered["layers.1.big"]) == 5  # 300 columns need 5 blocks of 64; smaller tensors stay whole
    assert all(len(covered[n]) == 1 for n in names if n != "layers.1.big")
    group_of = {n: n.split(".")[1] if n.startswith("layers") else "head" for n in names}
    for b in plan_blocks(ref, names, group_of, 64):
        assert len({group_of[names[s.index]] for s in b.segments}) == 1
        assert {b.key} == {group_of[names[s.index]] for s in b.segments}


@pytest.mark.usefixtures("small_blocks")
@pytest.mark.parametrize("n", [1, 3, 7])
def test_gram_and_combine_match_the_definition_across_block_boundaries(n):
    vectors = _vectors(n, SHAPES)
    x = _stacked(vectors)
    assert torch.allclose(gram_matrices(list(vectors.values()))[None].double(), x @ x.T, rtol=1e-5, atol=1e-4)
    w = torch.rand(n, n, generator=torch.Generator().manual_seed(1))
    expected = w.double() @ x
    got = combine(vectors, w)
    for i, c in enumerate(vectors):
        flat = torch.cat([got[c][name].reshape(-1).double() for name in SHAPES])
        assert torch.allclose(flat, expected[i], rtol=1e-5, atol=1e-5)
        assert {name: tuple(t.shape) for name, t in got[c].items()} == SHAPES


@pytest.mark.usefixtures("small_blocks")
def test_layerwise_groups_use_their_own_weights():
    vectors = _vectors(3, SHAPES)
    group_of = {n: "a" if n.startswith("layers.0") else "b" for n in SHAPES}
    wa, wb = torch.eye(3), torch.full((3, 3), 1 / 3)
    got = combine(vectors, {"a": wa, "b": wb}, group_of)
    for c in vectors:
        for name in SHAPES:
            if group_of[name] == "a":
                assert torch.equal(got[c][name], vectors[c][name])
            else:
                mean = sum(vectors[k][name] for k in vectors) / 3
                assert torch.allclose(got[c][name], mean, atol=1e-6)


def test_outputs_keep_dtypes_and_no_client_shares_storage_with_another():
    shapes = {"a": (5, 6), "b": (7,)}
    vectors = _vectors(3, shapes, torch.bfloat16)
    vectors = {c: {**v, "c": torch.arange(4)} for c, v in vectors.items()}  # non-floating: fp32 out
    got = combine(vectors, torch.full((3, 3), 1 / 3))
    assert {n: t.dtype for n, t in got["site-0"].items()} == {
        "a": torch.bfloat16,
        "b": torch.bfloat16,
        "c": torch.float32,
    }
    storages = {c: {t.untyped_storage().data_ptr() for t in got[c].values()} for c in got}
    for c in got:
        for other in got:
            if other != c:
                assert not storages[c] & storages[other]
        # a client's storages hold exactly its own tensors (what a serializer of a view would send along)
        own = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in got[c].values()}
        assert sum(own.values()) == sum(t.numel() * t.element_size() for t in got[c].values())


@pytest.mark.usefixtures("small_blocks")
@pytest.mark.parametrize("layerwise", [False, True])
def test_streaming_equals_batch_and_computes_on_each_read(layerwise):
    vectors = _vectors(4, SHAPES)
    batch = personalized_aggregate(vectors, layerwise=layerwise)
    streamed = personalized_aggregate(vectors, layerwise=layerwise, streaming=True)
    assert isinstance(streamed, StreamedUpdates)
    assert list(streamed) == list(vectors) and len(streamed) == 4
    for c in vectors:
        first = streamed[c]
        for name in SHAPES:
            assert torch.allclose(first[name], batch[c][name], atol=1e-6)
        assert streamed[c]["head.bias"] is not first["head.bias"]  # nothing cached between reads
    with pytest.raises(KeyError):
        streamed["site-9"]


def test_streaming_result_reports_the_same_weights():
    vectors = _vectors(3, SHAPES)
    a = fedbip_aggregate(vectors)
    b = fedbip_aggregate(vectors, streaming=True)
    assert torch.equal(a.weights, b.weights)


def test_mismatched_sizes_are_named():
    vectors = _vectors(2, {"a": (3, 4)})
    vectors["site-1"]["a"] = torch.zeros(13)
    with pytest.raises(ValueError, match="'a' of task vector 1 has 13 elements"):
        ColumnBlocks(list(vectors.values()))


def test_flat_outputs_are_views_of_one_buffer_per_dtype():
    ref = {"a": torch.zeros(2, 3), "b": torch.zeros(4, dtype=torch.float16), "c": torch.zeros(5)}
    buffers, params = flat_outputs(ref, 2)
    assert [sorted(str(d) for d in b) for b in buffers] == [["torch.float16", "torch.float32"]] * 2
    buffers[1][torch.float32].fill_(7.0)
    assert torch.equal(params[1]["c"], torch.full((5,), 7.0)) and params[1]["a"].shape == (2, 3)
    assert params[0]["b"].dtype == torch.float16


def test_huge_page_advice_is_harmless():
    big = torch.empty(4 << 20)  # 16 MiB
    advise_huge_pages(big)
    big.fill_(1.0)
    assert float(big.sum()) == big.numel()
    assert advise_huge_pages(torch.empty(10)) is False
