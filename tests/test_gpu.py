"""The real kernel on every GPU device present (CuPy/NVRTC and the GPU's OpenCL driver)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import gpu_devices
from families_for_tests import AXPY_FAULTY, AxpyProblem, faulty
from test_conv_kernel import SHAPES

from kptune.backends import open_backend
from kptune.kernel import get_family
from kptune.measure import measure_config, prepare
from kptune.measurement import Outcome, TimingSettings
from kptune.problem import Conv2dProblem
from kptune.runner import Runner

pytestmark = pytest.mark.gpu
GPUS = gpu_devices()
FAMILY = get_family("conv2d_fwd")
SHORT = TimingSettings(warmup=0, first_batch=1, min_runs=1, max_runs=1, max_input_sets=1)


@pytest.mark.skipif(not GPUS, reason="no GPU")
@pytest.mark.parametrize("device", GPUS, ids=lambda d: d.spec)
@pytest.mark.parametrize("shape", SHAPES)
def test_every_config_verifies_on_the_gpu(device, shape: str) -> None:  # type: ignore[no-untyped-def]
    problem = Conv2dProblem.parse(shape)
    configs = FAMILY.space.configs(problem, device)
    backend = open_backend(device)
    inputs = FAMILY.make_inputs(problem, np.random.default_rng(0))
    state = prepare(backend, FAMILY, problem, inputs, FAMILY.reference(problem, inputs), SHORT)
    failures = []
    for config in configs:
        m = measure_config(backend, FAMILY, state, config, None, SHORT)
        if m.outcome is not Outcome.OK:
            failures.append((config.key(), m.outcome, m.error[:120]))
    assert not failures, failures[:5]


@pytest.mark.skipif(not GPUS, reason="no GPU")
@pytest.mark.parametrize("device", GPUS, ids=lambda d: d.spec)
def test_faults_on_the_gpu_cost_one_config(device) -> None:  # type: ignore[no-untyped-def]
    settings = TimingSettings(target_ms=1.0, max_runs=5, timeout_s=20.0)
    with Runner(AXPY_FAULTY, device, settings) as runner:
        runner.set_problem(AxpyProblem(n=1 << 20))
        assert runner.measure(faulty(0)).outcome is Outcome.OK
        assert runner.measure(faulty(1)).outcome is Outcome.COMPILE_ERROR
        assert runner.measure(faulty(2)).outcome is Outcome.WRONG_RESULT
        assert runner.measure(faulty(5)).outcome is Outcome.LAUNCH_ERROR  # too many threads per block
        wild = runner.measure(faulty(4))  # illegal address: poisons a CUDA context
        assert wild.outcome in (Outcome.LAUNCH_ERROR, Outcome.WRONG_RESULT), wild
        assert runner.measure(faulty(3)).outcome is Outcome.TIMEOUT
        assert runner.measure(faulty(0)).outcome is Outcome.OK


CUPY_GPUS = [d for d in GPUS if d.backend == "cupy"]


@pytest.mark.skipif(not CUPY_GPUS, reason="no CuPy GPU")
@pytest.mark.parametrize("n", [1000, 4096 * 37 + 123])
def test_device_relative_error_matches_the_host(n: int) -> None:
    from kptune.backends import host_relative_error

    backend = open_backend(CUPY_GPUS[0])
    ref = np.random.default_rng(1).standard_normal(n)
    for index in (5, n - 3):  # in the parallel rows and in the tail
        out = ref.astype(np.float32)
        out[index] += 1.0
        got = backend.relative_error(backend.upload(out), backend.upload_reference(ref), (n,), np.dtype(np.float32))
        assert got == pytest.approx(host_relative_error(out, ref), rel=1e-6)
    out = ref.astype(np.float32)
    out[n - 1] = np.nan
    assert (
        backend.relative_error(backend.upload(out), backend.upload_reference(ref), (n,), np.dtype(np.float32)) == np.inf
    )


@pytest.mark.skipif(not CUPY_GPUS, reason="no CuPy GPU")
@pytest.mark.parametrize("shape", SHAPES)
def test_a_problem_made_on_the_gpu_has_the_hosts_reference_for_its_inputs(shape: str) -> None:
    """Inputs and float64 reference made on the GPU (CuPy's generator, cuBLAS): the host's reference
    of those very inputs, to rounding."""
    import cupy

    problem = Conv2dProblem.parse(shape)
    backend = open_backend(CUPY_GPUS[0])
    inputs, (ref, norm) = backend.make_on_device(FAMILY, problem, 0)
    host_inputs = {k: cupy.asnumpy(v) for k, v in inputs.items()}
    assert all(-1 <= v.min() and v.max() <= 1 for v in host_inputs.values())
    host = FAMILY.reference(problem, host_inputs)
    assert np.linalg.norm(cupy.asnumpy(ref) - host) <= 1e-12 * np.linalg.norm(host)
    assert norm == pytest.approx(float(np.linalg.norm(host)), rel=1e-12)


@pytest.mark.skipif(not CUPY_GPUS, reason="no CuPy GPU")
def test_a_runner_on_cupy_sends_only_the_problem() -> None:
    from kptune.backends import made_on_device

    device = CUPY_GPUS[0]
    problem = Conv2dProblem.parse(SHAPES[0])
    assert made_on_device(device, FAMILY)
    with Runner(FAMILY, device, SHORT) as runner:
        runner.set_problem(problem)
        assert runner._payload == (problem, None, None)
        got = list(runner.measure_each(FAMILY.space.configs(problem, device)[:20]))
    assert all(m.outcome is Outcome.OK and m.rel_error is not None and m.rel_error < 1e-4 for m in got), got[:3]


@pytest.mark.skipif(not CUPY_GPUS, reason="no CuPy GPU")
def test_the_spin_keeps_host_overhead_out_of_a_small_kernels_time() -> None:
    """Timed behind the GPU-side spin, a ~10 us kernel's launches read no longer than without it
    (without, each event pair also holds the host's launch overhead)."""
    import statistics

    problem = Conv2dProblem.parse("n=1,c=64,h=14,w=14,k=64,r=1,s=1")
    device = CUPY_GPUS[0]
    backend = open_backend(device)
    state = prepare(backend, FAMILY, problem, None, None, SHORT)
    config = FAMILY.space.configs(problem, device)[0]
    kernel = backend.compile(FAMILY.full_source, FAMILY.entry, FAMILY.defines(problem, config))
    groups, local = FAMILY.geometry(problem, config)
    sets = [state.arg_sets[0]] * 50
    zeroed = state.output if FAMILY.needs_zeroed_output(config) else None
    backend.time_launches(kernel, groups, local, sets[:3], zeroed)  # module load, calibration
    held = statistics.median(backend.time_launches(kernel, groups, local, sets, zeroed))
    backend._cycles_per_ms = 0.0  # no spin
    bare = statistics.median(backend.time_launches(kernel, groups, local, sets, zeroed))
    assert held <= 1.05 * bare, (held, bare)


@pytest.mark.skipif(not CUPY_GPUS, reason="no CuPy GPU")
def test_torch_entry_on_cuda_tensors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch without CUDA")
    import kptune.torch as kt

    x = torch.rand(4, 16, 14, 14, device="cuda") * 2 - 1
    w = torch.rand(32, 16, 3, 3, device="cuda") * 2 - 1
    torch.backends.cudnn.allow_tf32 = False
    y = kt.conv2d(x, w, stride=1, padding=1, db=tmp_path / "perf.db", budget=8)
    assert y.device == x.device and torch.allclose(y, torch.nn.functional.conv2d(x, w, padding=1), rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not CUPY_GPUS, reason="no CuPy GPU")
def test_a_gpu_like_the_shipped_models_autotunes_with_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """An sm_90 GPU with 132 SMs (an H200, or an H100 SXM borrowing the H200's: `DeviceInfo.may_borrow`) takes
    the model path, every candidate valid on it and measured."""
    from kptune.autotune import autotune, default_model_places, model_for
    from kptune.device import DeviceInfo
    from kptune.predict.checkpoint import read_meta

    device = CUPY_GPUS[0]
    made_for = DeviceInfo(**read_meta(default_model_places()[0] / "model-h200.safetensors")["device_limits"])
    if (device.arch, device.compute_units) != (made_for.arch, made_for.compute_units):
        pytest.skip(f"{device.name} ({device.arch}, {device.compute_units} SMs) is unlike the shipped model's GPU")
    assert model_for(device, FAMILY, default_model_places()) is not None
    problem = Conv2dProblem.parse("n=3,c=24,h=20,w=20,k=40,r=3,s=3,pad=1")  # a shape of no corpus network
    result = autotune(problem, device=device, db=tmp_path / "perf.db", k=3, neighbours=2, local=4)
    assert result.source == "model" and "model-h200" in (result.model or "")
    assert (device.key == "cupy:NVIDIA H200") == ("another GPU" not in result.note), result.note
    assert 3 <= len(result.measured) <= 5 + 4 and "4 by a local search" in result.note, result.note
    assert all(FAMILY.space.valid(problem, device, m.config) for m in result.measured)
    assert result.best is not None and result.best.outcome is Outcome.OK
