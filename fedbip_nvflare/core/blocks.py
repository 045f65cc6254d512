"""Column blocks of stacked task vectors: the memory-bounded engine behind FedBip's two matmuls.

The engine's entry points are :class:`ColumnBlocks` and its :meth:`ColumnBlocks.grams` / :meth:`ColumnBlocks.combine`;
the math on their results (cosines, weights) lives in :mod:`.similarity` and :mod:`.weights`.

FedBip needs ``G = T Tᵀ`` and ``U = P T`` for the ``[N, d]`` matrix ``T`` whose rows are the clients' flattened
task vectors. ``T`` is never built: the d columns are cut into blocks of at most a few MiB, each block is
gathered into one reused fp32 buffer (``N`` ``torch.cat`` calls), and both matmuls run block by block. Extra
memory is one block (plus one ``[N, block]`` product), whatever d is; the inputs are read once per pass.
"""

from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch

from fedbip_nvflare.core.memory import advise_huge_pages

Params = Dict[str, torch.Tensor]

BLOCK_BYTES = 4 << 20
"""Target size of one fp32 block (all N rows): small enough for the CPU's cache, large for efficient GEMMs."""
MIN_BLOCK_COLUMNS = 8192


@dataclass(frozen=True)
class Segment:
    """Columns ``[start, stop)`` of the flattened tensor ``index`` (in name order), at ``offset`` in its block."""

    index: int
    start: int
    stop: int
    offset: int
    whole: bool


@dataclass(frozen=True)
class Block:
    """A run of columns that share one weight matrix (one layer group) and one output dtype.

    Attributes:
        key: The layer group (None: model-level).
        dtype: Output dtype of its tensors.
        segments: Where its columns come from.
        width: Number of columns.
        flat_offset: Where its columns start in a :func:`flat_outputs` buffer of ``dtype`` (a block is
            contiguous there, since tensors of one dtype are laid out in ``reference`` order).
    """

    key: Optional[str]
    dtype: torch.dtype
    segments: Tuple[Segment, ...]
    width: int
    flat_offset: int


def output_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype a combined tensor gets: the input's when floating, else fp32."""
    return t.dtype if t.is_floating_point() else torch.float32


def check_same_layout(vectors: Sequence[Mapping[str, torch.Tensor]]) -> List[str]:
    """The tensor names of the first vector, after checking every vector has the same names and sizes.

    Raises:
        ValueError: No vectors, or a vector whose names or tensor sizes differ from the first one's.
    """
    if not vectors:
        raise ValueError("need at least one task vector")
    names = list(vectors[0].keys())
    for i, v in enumerate(vectors[1:], start=1):
        if set(v.keys()) != set(names):
            raise ValueError(f"task vector {i} has different tensor names than task vector 0")
        for name in names:
            if v[name].numel() != vectors[0][name].numel():
                raise ValueError(
                    f"tensor {name!r} of task vector {i} has {v[name].numel()} elements, "
                    f"task vector 0 has {vectors[0][name].numel()}"
                )
    return names


DEVICE_BLOCK_BYTES = 256 << 20
"""Block size on accelerators: no cache to fit, and fewer, larger kernels amortise the launches."""


def block_columns(num_vectors: int, device: Optional[torch.device] = None) -> int:
    """Columns per block for ``num_vectors`` rows: ``BLOCK_BYTES`` of fp32 on CPU (``DEVICE_BLOCK_BYTES`` on an
    accelerator), at least ``MIN_BLOCK_COLUMNS``."""
    budget = BLOCK_BYTES if device is None or device.type == "cpu" else DEVICE_BLOCK_BYTES
    return max(MIN_BLOCK_COLUMNS, budget // (4 * max(1, num_vectors)))


def plan_blocks(
    reference: Mapping[str, torch.Tensor], names: Sequence[str], group_of: Optional[Mapping[str, str]], columns: int
) -> List[Block]:
    """Cuts the flattened tensors of ``reference`` into blocks of at most ``columns`` columns.

    Consecutive tensors of the same group and output dtype share blocks; a block ends where the next tensor
    would not fit, and only a tensor larger than a block is split.

    Args:
        reference: One vector.
        names: Its tensor names, in the order the columns are laid out.
        group_of: ``{name: group}`` (a block never spans two groups), or None for a single group.
        columns: Maximum block width.

    Returns:
        The blocks, in column order.
    """
    blocks: List[Block] = []
    segments: List[Segment] = []
    width = 0
    current: Optional[Tuple[Optional[str], torch.dtype]] = None
    flat_size: Dict[torch.dtype, int] = {}

    def close() -> None:
        nonlocal segments, width
        if segments:
            offset = flat_size.get(current[1], 0)
            blocks.append(Block(current[0], current[1], tuple(segments), width, offset))
            flat_size[current[1]] = offset + width
        segments, width = [], 0

    for index, name in enumerate(names):
        tensor = reference[name]
        key = (group_of[name] if group_of is not None else None, output_dtype(tensor))
        if key != current:
            close()
            current = key
        start, size = 0, tensor.numel()
        if width and width + size > columns:  # start a new block rather than split a tensor that fits one
            close()
        while start < size:
            take = min(size - start, columns - width)
            segments.append(Segment(index, start, start + take, width, take == size))
            width += take
            start += take
            if width == columns:
                close()
    close()
    return blocks


def _gather(flats: Sequence[Sequence[torch.Tensor]], block: Block, out: torch.Tensor) -> torch.Tensor:
    """Writes the block's columns of every vector into a contiguous ``[N, width]`` fp32 view of ``out``.

    Args:
        flats: Per vector, its flattened tensors in the plan's name order (:attr:`ColumnBlocks.names`).
        block: The columns to gather.
        out: A flat fp32 buffer of at least ``N × block.width`` elements.

    Returns:
        The ``[N, width]`` view of ``out`` that holds the columns.
    """
    view = out[: len(flats) * block.width].view(len(flats), block.width)
    for row, flat in zip(view, flats):
        parts = [flat[s.index] if s.whole else flat[s.index][s.start : s.stop] for s in block.segments]
        if len(parts) == 1:
            row.copy_(parts[0])
        elif parts[0].dtype == row.dtype:
            torch.cat(parts, out=row)
        else:  # measured: cat then one converting copy beats a converting cat (16-bit inputs)
            row.copy_(torch.cat(parts))
    return view


class ColumnBlocks:
    """The ``[N, d]`` matrix of N task vectors, as an iterable of column blocks; it is never materialised.

    Iterating yields ``(block, [N, width] fp32 columns)``; the columns live in one buffer reused by the next
    block, so use them before advancing. It can be iterated several times (e.g. for the Gram, then the combine).

    Args:
        vectors: N task vectors with identical names and tensor sizes (checked); not copied.
        group_of: ``{name: group}``: blocks never span two groups; None for one group.
    """

    def __init__(self, vectors: Sequence[Mapping[str, torch.Tensor]], group_of: Optional[Mapping[str, str]] = None):
        self.names = check_same_layout(vectors)
        self.reference = {name: vectors[0][name] for name in self.names}
        device = next(iter(self.reference.values())).device if self.reference else None
        self.blocks = plan_blocks(self.reference, self.names, group_of, block_columns(len(vectors), device))
        with torch.no_grad():
            self._flats = [[v[name].reshape(-1) for name in self.names] for v in vectors]
        self._width = max((b.width for b in self.blocks), default=0)

    def __len__(self) -> int:
        return len(self._flats)

    def __iter__(self) -> Iterator[Tuple[Block, torch.Tensor]]:
        if not self.blocks:
            return
        device = self._flats[0][0].device
        buffer = torch.empty(len(self._flats) * self._width, dtype=torch.float32, device=device)
        with torch.no_grad():
            for block in self.blocks:
                yield block, _gather(self._flats, block, buffer)

    def grams(self) -> Dict[Optional[str], torch.Tensor]:
        """``{group: [N, N] fp32 Gram}`` ``G_ij = <τ_i, τ_j>``, accumulated block by block (key None: one group)."""
        n = len(self)
        grams: Dict[Optional[str], torch.Tensor] = {}
        for block, cols in self:
            gram = grams.get(block.key)
            if gram is None:
                gram = grams[block.key] = torch.zeros(n, n, dtype=torch.float32, device=cols.device)
            gram.addmm_(cols, cols.T)
        return grams

    def combine(self, weights_of: Callable[[Optional[str]], torch.Tensor], count: int) -> List[Params]:
        """``[{name: Σ_k w_mk τ_k}]``, one output per row m of the weights, in one pass over the columns.

        Args:
            weights_of: ``group -> [count, N]`` fp32 weights.
            count: Number of weight rows M.

        Returns:
            M sets of tensors shaped like the vectors (dtype: :func:`output_dtype`), each backed by its own flat
            buffers (see :func:`flat_outputs`).
        """
        product = _BlockProduct()
        buffers, outputs = flat_outputs(self.reference, count)
        for block, cols in self:
            _scatter(product(weights_of(block.key), cols), block, buffers)
        return outputs


class _BlockProduct:
    """``weights @ columns`` into one reused buffer, so no block allocates (and page-faults) a fresh result."""

    def __init__(self):
        self._storage: Optional[torch.Tensor] = None

    def __call__(self, weights: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        size = weights.shape[0] * columns.shape[1]
        if self._storage is None or self._storage.numel() < size or self._storage.device != columns.device:
            self._storage = torch.empty(size, dtype=torch.float32, device=columns.device)
        out = self._storage[:size].view(weights.shape[0], columns.shape[1])
        return torch.mm(weights, columns, out=out)


def flat_outputs(
    reference: Mapping[str, torch.Tensor], count: int
) -> Tuple[List[Dict[torch.dtype, torch.Tensor]], List[Params]]:
    """``count`` sets of output tensors shaped like ``reference``, each set backed by its own flat buffers.

    Returns:
        ``(buffers, params)``: per set, ``{dtype: flat buffer}`` and ``{name: view of that buffer}``. A set's
        tensors share storage with each other only, never with another set's.
    """
    names_of: Dict[torch.dtype, List[str]] = {}
    for name, t in reference.items():
        names_of.setdefault(output_dtype(t), []).append(name)
    device = next(iter(reference.values())).device if reference else None
    buffers, params = [], []
    # Where each tensor lies in its dtype's buffer: one as_strided per tensor and set (cheaper than split + view).
    layouts = {}
    for dtype, names in names_of.items():
        offset, places = 0, []
        for name in names:
            shape = reference[name].shape
            places.append((name, shape, _contiguous_strides(shape), offset))
            offset += reference[name].numel()
        layouts[dtype] = (offset, places)
    for _ in range(count):
        flat, views = {}, {}
        for dtype, (size, places) in layouts.items():
            flat[dtype] = buffer = torch.empty(size, dtype=dtype, device=device)
            advise_huge_pages(buffer)
            for name, shape, strides, offset in places:
                views[name] = buffer.as_strided(shape, strides, offset)
        buffers.append(flat)
        params.append({name: views[name] for name in reference})
    return buffers, params


def _contiguous_strides(shape: torch.Size) -> Tuple[int, ...]:
    """The strides of a contiguous tensor of ``shape``."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def _scatter(result: torch.Tensor, block: Block, buffers: Sequence[Mapping[torch.dtype, torch.Tensor]]) -> None:
    """Copies row i of a ``[M, width]`` block result into the block's columns of the i-th :func:`flat_outputs`."""
    for row, flat in zip(result, buffers):
        flat[block.dtype][block.flat_offset : block.flat_offset + block.width].copy_(row)
