"""train.low_memory_malloc pins glibc's mmap threshold at train.mmap_threshold_kib: allocations at least that big
are mmap'd (returned to the OS on free), smaller ones come from the heap. Checked in a fresh interpreter through
glibc's own counter of mmap'd blocks (mallinfo2().hblks), so this test process's allocator is left alone."""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
import textwrap

import pytest

from tunesmith.config.schema import RunConfig
from pydantic import ValidationError

glibc = sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "mallinfo2")

PROBE = textwrap.dedent("""
    import ctypes, json, sys
    import torch
    from tunesmith.config.schema import RunConfig
    from tunesmith.objectives.sft import SFTObjective
    from tunesmith.training.run import apply_speed_options

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                   "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]

    def mmapped(nbytes):  # is one malloc of nbytes served by its own mmap?
        before = libc.mallinfo2().hblks
        ptr = libc.malloc(nbytes)
        after = libc.mallinfo2().hblks
        libc.free(ptr)
        return after > before

    cfg = RunConfig.model_validate({"model": {"name_or_path": "unused"}, "train": json.loads(sys.argv[1])})
    apply_speed_options(torch.nn.Linear(2, 2), cfg, SFTObjective())
    print(json.dumps({str(n): mmapped(n) for n in (1 << 20, 6 << 20, 12 << 20)}))
""")


def _probe(train: dict) -> dict[str, bool]:
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(train)], capture_output=True, text=True, check=True)
    return {int(k): v for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}


@pytest.mark.skipif(not glibc, reason="needs glibc (mallinfo2)")
def test_mmap_threshold_is_pinned_where_the_config_says():
    pinned = _probe({"low_memory_malloc": True, "mmap_threshold_kib": 8192})
    assert pinned == {1 << 20: False, 6 << 20: False, 12 << 20: True}
    small = _probe({"low_memory_malloc": True, "mmap_threshold_kib": 512})
    assert small == {1 << 20: True, 6 << 20: True, 12 << 20: True}


def test_mmap_threshold_bounds_are_checked():
    with pytest.raises(ValidationError, match="mmap_threshold_kib"):
        RunConfig.model_validate({"model": {"name_or_path": "m"}, "train": {"mmap_threshold_kib": 65536}})
