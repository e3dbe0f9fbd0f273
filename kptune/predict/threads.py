"""One thread for predicting and for training: PyTorch's intra-op pool and NumPy's BLAS pool."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from typing import Any

_ONE_THREAD = threading.RLock()  # held while the pools are at one thread


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """PyTorch's intra-op pool and NumPy's BLAS pool at one thread for the duration, the caller's settings
    restored after.

    Predicting: one shape's beam search is a chain of small ops, which a pool only slows, and badly
    where other processes keep the cores busy (inside `benchmarks/compare_gpus.py` on a 4x H200 host,
    four tuners with busy measuring workers, a prediction took 0.7-2.9 s with PyTorch's default pool
    against ~5 ms alone; on 2 cores with 2 busy processes: p50 13.5 ms with 2 threads, 3.3 ms with one).
    The beam's decoder steps in NumPy (`models.LSTMBeamDecoder`), whose BLAS (OpenBLAS) keeps a pool of
    its own, one thread per core by default: beside 15 busy processes on an H100 host's 16 cores it made a new
    shape's `--rerank` prediction 79.7 ms (p50) instead of 9.5, and on 2 cores beside 2 a repeated one's p99 ~6x
    longer (`benchmarks/predict_latency.py --busy N`, RESULTS.md).
    Training: the order of floating-point sums depends on the thread count, so a seeded training gives
    other weights on another machine (on the eighth dataset installment, seed 0 early-stopped at epoch 8
    on 2 threads and at epoch 41 on one); on one thread it is the same everywhere, and the small model
    trains no slower (284 s against 292 s on 2 cores). The settings are process-wide, so users in
    several threads take turns (one lock): none restores another's setting halfway."""
    import torch

    with _ONE_THREAD:
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        blas = _blas()
        try:
            with blas.limit(limits=1, user_api="blas") if blas is not None else contextlib.nullcontext():
                yield
        finally:
            torch.set_num_threads(before)


@functools.cache
def _blas() -> Any | None:
    """A controller of the BLAS libraries loaded (NumPy's), made once: finding them costs ~0.3 ms, a limit
    through it ~10 us. None without threadpoolctl (scikit-learn's dependency): NumPy's pool is then left as
    it is."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()
