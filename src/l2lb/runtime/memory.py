"""Process memory settings.

:func:`pin_mmap_threshold` fixes glibc's mmap threshold. By default glibc raises it each time a large
block (mmap'ed) is freed, so later large blocks come from the heap and its top is rarely given back:
the announcer's ~200 KB heartbeats (10k VIPs, every 100 ms) then grow RSS by a few MiB for nothing.
With the threshold fixed at 128 KiB every such buffer is mapped and unmapped (measured with bench/arp
--bus: 60.1-61.5 MiB -> 59.1-59.3 MiB at 10k VIPs).
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["pin_mmap_threshold"]

M_MMAP_THRESHOLD = -3


def pin_mmap_threshold(nbytes: int = 128 * 1024) -> bool:
    """Fix glibc's mmap threshold at ``nbytes``; False (and nothing changed) without glibc's ``mallopt``."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, nbytes))
