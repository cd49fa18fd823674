"""Process settings for a learner: what the host's C library does with freed memory, and
which device the networks train on.

A learner step allocates and frees hundreds of activation tensors of 0.25–3 MB. glibc's
malloc serves blocks that large with mmap and hands them back to the kernel when freed
(or trims the heap), so every step touches fresh pages: ~11,000 page faults and ~15 ms of
kernel time per default LWD step on 2 cores (docs/benchmarks.md). Keeping freed memory
in the process makes those allocations reuse warm pages (6–10% less CPU per step).
"""

from __future__ import annotations

import ctypes
import ctypes.util

import torch

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Process-wide: serve blocks below `mmap_threshold` (glibc's maximum, 32 MiB) from the
    heap and keep up to `trim_threshold` of freed heap instead of returning it to the OS.
    For learner processes (the memory stays with the process); a no-op where the C
    library is not glibc. Returns whether the settings were applied."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    settings = ((_M_MMAP_THRESHOLD, mmap_threshold), (_M_TRIM_THRESHOLD, trim_threshold), (_M_TOP_PAD, 64 << 20))
    return all(mallopt(parameter, value) == 1 for parameter, value in settings)


DEVICE_HELP = (
    "cpu",
    "torch device of the networks: 'cpu', or 'cuda' / 'cuda:N' on a GPU machine (data, sampling noise "
    "and checkpoints stay on the CPU)",
)


def prepare_learner_process(device: str, threads: int) -> torch.device:
    """What every training loop does first: check the device (before any work starts), set
    torch's CPU threads, and keep freed memory in the process. Returns the device."""
    checked = training_device(device)
    torch.set_num_threads(threads)
    keep_freed_memory()
    return checked


def training_device(name: str) -> torch.device:
    """The torch device a training loop runs its networks on, checked before any work starts:
    'cpu', 'cuda' or 'cuda:N' (a GPU this torch build can use). Data, sampling noise and
    checkpoints stay on the CPU; only the networks, their optimisers and each batch move."""
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"--device {name!r} is not a torch device ({err}); use 'cpu' or 'cuda'") from err
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"--device {name!r}: training runs on 'cpu' or 'cuda', not {device.type!r}")
    if not torch.cuda.is_available():
        raise ValueError(
            f"--device {name!r}: this torch ({torch.__version__}) sees no CUDA GPU "
            "(a CPU build, or no driver); run with --device cpu"
        )
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    return device
