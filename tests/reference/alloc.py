"""glibc malloc settings that give PyTorch its best speed on this machine.

With glibc's defaults, PyTorch's CPU allocator hands the activations of
every training step back to the kernel (heap trimming, and mmap for large
blocks), so the next step page-faults them in again: 15,000-25,000 minor
faults a step in torch_bench's UNet row, which then runs at 270-310 img/s
on 2 threads instead of 400-430 with the memory kept (measured 2026-11-22,
see docs/BENCHMARKS.md). Whether a given script hits this depends on the
order of its allocations (torch_pipeline's loop mostly did not). Keeping
freed memory in the process removes it, so the benchmarks compare against
PyTorch at its best. The C programs allocate nothing per step and do not
care.
"""
import ctypes

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3


def keep_freed_memory():
    """Never trim the heap; serve blocks up to 32 MiB (glibc's largest
    allowed mmap threshold) from it. Returns True if both settings took."""
    libc = ctypes.CDLL("libc.so.6")
    return bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)) and \
        bool(libc.mallopt(M_MMAP_THRESHOLD, 32 << 20))
