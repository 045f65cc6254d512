"""Large output buffers backed by transparent huge pages where the OS allows it."""

import ctypes
import sys
from typing import Optional

import torch

HUGE_PAGE = 2 << 20
MADV_HUGEPAGE = 14
_libc: Optional[ctypes.CDLL] = None


def _madvise():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc.madvise


def advise_huge_pages(tensor: torch.Tensor) -> bool:
    """Asks Linux to back a fresh CPU tensor's untouched pages with 2 MiB huge pages (``MADV_HUGEPAGE``).

    Writing a freshly allocated gigabyte otherwise costs one page fault per 4 KiB, several times the cost of
    the writes themselves. The same as PyTorch's ``THP_MEM_ALLOC_ENABLE=1``, for these buffers only. A no-op
    (False) off Linux, for non-CPU or small tensors, or when the kernel refuses; the tensor works either way.
    """
    size = tensor.numel() * tensor.element_size()
    if not sys.platform.startswith("linux") or tensor.device.type != "cpu" or size < 2 * HUGE_PAGE:
        return False
    start = -(-tensor.data_ptr() // HUGE_PAGE) * HUGE_PAGE
    stop = (tensor.data_ptr() + size) // HUGE_PAGE * HUGE_PAGE
    try:
        madvise = _madvise()
        return madvise(ctypes.c_void_p(start), ctypes.c_size_t(stop - start), MADV_HUGEPAGE) == 0
    except (OSError, AttributeError):
        return False
