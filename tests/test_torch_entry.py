"""kptune.torch.conv2d on PoCL against torch.nn.functional.conv2d."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import kptune.torch as kt  # noqa: E402
from kptune.device import DeviceInfo  # noqa: E402
from kptune.errors import KptuneError  # noqa: E402
from kptune.measurement import TimingSettings  # noqa: E402

FAST = TimingSettings(warmup=0, first_batch=1, min_runs=1, max_runs=2, max_input_sets=1)


@pytest.mark.parametrize(("shape", "kw"), [
    ((2, 3, 9, 7), dict(w=(5, 3, 3, 2), stride=2, padding=(1, 0), dilation=(2, 1))),
    ((1, 8, 6, 6), dict(w=(4, 8, 1, 1), stride=1, padding=0, dilation=1)),
])  # fmt: skip
def test_matches_torch_on_the_cpu_device(cpu_device: DeviceInfo, tmp_path: Path, shape: tuple[int, ...],
                                         kw: dict) -> None:  # fmt: skip
    g = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=g) * 2 - 1
    w = torch.rand(kw.pop("w"), generator=g) * 2 - 1
    y = kt.conv2d(x, w, db=tmp_path / "perf.db", budget=3, settings=FAST, **kw)
    expect = torch.nn.functional.conv2d(x, w, **kw)
    assert y.shape == expect.shape and torch.allclose(y, expect, rtol=1e-4, atol=1e-5)
    again = kt.conv2d(x, w, db=tmp_path / "perf.db", budget=3, settings=FAST, **kw)  # the db's winner, no tuning
    assert torch.equal(again, y)


def test_bad_tensors_are_refused() -> None:
    x = torch.zeros(1, 3, 5, 5)
    with pytest.raises(KptuneError, match="channels"):
        kt.conv2d(x, torch.zeros(4, 2, 3, 3))
    with pytest.raises(KptuneError, match="float32 or float16"):
        kt.conv2d(x.double(), torch.zeros(4, 3, 3, 3).double())
    with pytest.raises(KptuneError, match="NCHW"):
        kt.conv2d(torch.zeros(3, 5, 5), torch.zeros(4, 3, 3, 3))
