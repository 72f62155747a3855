"""segkit's own process keeps big arrays on the heap and does not hand freed memory back (glibc only)."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys

import pytest

PROBE = """
import ctypes, json, sys
import numpy as np
from segkit.allocator import tune_allocator

class MallInfo2(ctypes.Structure):
    names = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
    _fields_ = [(n, ctypes.c_size_t) for n in names.split()]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
tuned = tune_allocator()
a = np.ones(64 * 2**20, dtype=np.uint8)  # 64 MiB, far above glibc's default mmap threshold
mmapped = libc.mallinfo2().hblkhd
del a
print(json.dumps({"tuned": tuned, "mmapped": mmapped, "free_kept": libc.mallinfo2().fordblks}))
"""


def probe(env: dict[str, str]) -> dict[str, int]:
    res = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-1500:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tuned_allocator_serves_big_arrays_from_the_heap_and_keeps_them():
    if not hasattr(ctypes.CDLL(None), "mallinfo2"):
        pytest.skip("glibc older than 2.33 (no mallinfo2)")
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "SEGKIT_MALLOPT"}
    tuned = probe(base)
    assert tuned["tuned"] and tuned["mmapped"] < 2**20 and tuned["free_kept"] >= 64 * 2**20
    off = probe({**base, "SEGKIT_MALLOPT": "0"})
    assert not off["tuned"] and off["mmapped"] >= 64 * 2**20  # glibc's default: mmap, returned at free
    theirs = probe({**base, "MALLOC_TRIM_THRESHOLD_": "1000000"})
    assert not theirs["tuned"]  # the user's own settings win
