"""PyTorch's intra-op pool at one thread, for predicting and for training."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_ONE_THREAD = threading.RLock()  # held while PyTorch's pool is at one thread


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """PyTorch's intra-op pool at one thread for the duration, the caller's setting restored after.

    Predicting: one shape's beam search is a chain of small ops, which a pool only slows, and badly
    where other processes keep the cores busy (inside `benchmarks/compare_gpus.py` on a 4x H200 host,
    four tuners with busy measuring workers, a prediction took 0.7-2.9 s with PyTorch's default pool
    against ~5 ms alone; on 2 cores with 2 busy processes: p50 13.5 ms with 2 threads, 3.3 ms with one).
    Training: the order of floating-point sums depends on the thread count, so a seeded training gives
    other weights on another machine (on the eighth dataset installment, seed 0 early-stopped at epoch 8
    on 2 threads and at epoch 41 on one); on one thread it is the same everywhere, and the small model
    trains no slower (284 s against 292 s on 2 cores). The setting is process-wide, so users in
    several threads take turns (one lock): none restores another's setting halfway."""
    import torch

    with _ONE_THREAD:
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)
