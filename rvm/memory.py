"""Process-wide allocator setting for long conversions on Linux.

glibc hands every freed block over its mmap threshold (dynamic, 32 MiB at most) back to the kernel, so a
framework that allocates fresh full-resolution tensors each frame, as PyTorch does, page-faults them in again
every frame: at 1080p PyTorch eager took 12-40k page faults a frame here (none with this setting) and ran at
9 instead of 12 frames/s; a pipelined PyTorch conversion went from 6.1-6.3 to 6.7 frames/s.
Keeping freed memory in the heap for reuse removes that. It is process-wide, so the `rvm convert` command
turns it on for its own process; the library never does it behind a caller's back.
"""
import ctypes
import logging
import platform

log = logging.getLogger(__name__)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
KEEP_BYTES = 1 << 30


def keep_freed_memory() -> bool:
    """Ask glibc to serve large blocks from its heap and keep freed memory (up to 1 GiB) for reuse instead of
    returning it to the kernel. Returns whether the setting took (False off glibc, e.g. macOS or musl)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)  # the process's own symbols, glibc's among them: no library search at start-up
        kept = libc.mallopt(M_MMAP_THRESHOLD, KEEP_BYTES) == 1 and libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES) == 1
    except (OSError, AttributeError):
        return False
    log.debug("glibc keeps freed memory for reuse: %s", kept)
    return kept
