"""glibc allocator settings for segkit's large, repeated array allocations.

By default glibc serves allocations above a threshold with fresh mmap'd pages and returns freed
memory to the OS, so every batch of a training loop or volume of a prediction faults its pages in
again. Measured on the 2-core machine: a training step 0.62 s with the defaults, 0.44 s with
MALLOC_MMAP_MAX_=0 and a large MALLOC_TRIM_THRESHOLD_ (issue #12). segkit applies the same two
settings to its own process through mallopt(3), unless the user set either variable (theirs win)
or SEGKIT_MALLOPT=0.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1  # <malloc.h>
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1  # keep up to 2 GiB of freed heap for reuse (the largest int mallopt takes)


def tune_allocator() -> bool:
    """Heap instead of mmap for big blocks, and no trimming; True when glibc took both settings."""
    if os.environ.get("SEGKIT_MALLOPT") == "0" or any(
        k in os.environ for k in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")
    ):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
