"""The GPU-free parts of benchmarks/vs_cudnn.py: summary math, table, job loop, provenance, no-CUDA exit."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import common
import vs_cudnn as V

from kptune.errors import KptuneError
from kptune.problem import Conv2dProblem

P1 = Conv2dProblem(n=1, c=64, h=56, w=56, k=64, r=3, s=3, pad_h=1, pad_w=1)
P2 = Conv2dProblem(n=1, c=256, h=14, w=14, k=1024, r=1, s=1)


def _row(layer: str, problem: Conv2dProblem, ours_ms: float | None, cudnn_ms: float | None, **job: Any) -> V.Row:
    fields = {"net": "resnet50", "batch": 1, "dtype": "fp32", "count": 1, **job}
    ours = V.Ours("ok", ours_ms, "BM=64,BN=64", {"measured": 3}) if ours_ms else V.Ours("not supported: fp16")
    cudnn = V.Cudnn("ok", cudnn_ms, cudnn_ms, 10, 3) if cudnn_ms else V.Cudnn("error: out of memory")
    return V.Row(V.Job(layer=layer, problem=problem, **fields), ours, cudnn)


def test_geomean_ratio_and_tflops() -> None:
    assert V.geomean([1.0, 4.0]) == pytest.approx(2.0)
    assert V.geomean([None, 2.0, 8.0]) == pytest.approx(4.0)
    assert V.geomean([]) is None
    with pytest.raises(ValueError, match="non-positive"):
        V.geomean([1.0, 0.0])
    assert V.speed_ratio(2.0, 1.0) == 2.0  # cuDNN twice as slow: we are 2x faster
    assert V.speed_ratio(None, 1.0) is None and V.speed_ratio(1.0, None) is None
    assert V.tflops(2e12, 1000.0) == pytest.approx(2.0)
    assert V.tflops(2e12, None) is None
    assert V.share(25.0, 50.0) == 0.5 and V.share(None, 50.0) is None and V.share(1.0, None) is None


def test_input_copies_exceed_twice_the_l2() -> None:
    mb = 2**20
    copies = V.input_copies(10 * mb, 50 * mb)
    assert copies == 11 and copies * 10 * mb > 2 * 50 * mb and (copies - 1) * 10 * mb <= 2 * 50 * mb
    assert V.input_copies(500 * mb, 50 * mb) == 1
    assert V.input_copies(1, 50 * mb) == V.MAX_COPIES
    assert V.input_copies(10 * mb, 50 * mb, total_mem_bytes=80 * mb) == 2  # a quarter of memory at most


def test_timed_runs_target_25_ms_at_least_10() -> None:
    assert V.timed_runs(0.5) == 50
    assert V.timed_runs(10.0) == V.MIN_RUNS == 10
    assert V.timed_runs(1e-6) == V.MAX_RUNS


def test_plan_orders_layers_then_dtypes_and_caps_layers() -> None:
    jobs = V.plan(["resnet50", "vgg16"], [1, 32], ["fp32", "fp16"], max_layers=2)
    assert len(jobs) == 2 * 2 * 2 * 2
    assert [(j.net, j.batch, j.layer, j.dtype) for j in jobs[:4]] == [
        ("resnet50", 1, "conv1", "fp32"), ("resnet50", 1, "conv1", "fp16"),
        ("resnet50", 1, "layer1.0.conv1", "fp32"), ("resnet50", 1, "layer1.0.conv1", "fp16"),
    ]  # fmt: skip
    assert all(j.problem.dtype == "fp32" for j in jobs)
    assert jobs[4].problem.n == 32
    assert len(V.plan(["resnet50"], [1], ["fp32"], None)) == 23


def test_run_jobs_records_unsupported_dtypes_and_errors_as_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Conv2dProblem, "SUPPORTED_DTYPES", ("fp32",))  # as before kptune had fp16
    tuned: list[Conv2dProblem] = []

    def tune_layer(problem: Conv2dProblem) -> V.Ours:
        tuned.append(problem)
        if problem.c == 3:
            raise KptuneError("kernel has no valid config")
        return V.Ours("ok", 1.0, "BM=64", None)

    jobs = V.plan(["resnet50"], [1], ["fp32", "fp16"], max_layers=2)
    rows = V.run_jobs(jobs, tune_layer, lambda p, dt: V.Cudnn("ok", 2.0, 2.0, 10, 1))
    assert len(rows) == 4
    stem32, stem16, l1_32, l1_16 = (r.ours for r in rows)
    assert stem32.status.startswith("error: kernel has no valid config") and stem32.time_ms is None
    assert stem16.status.startswith("not supported: dtype 'fp16'") and l1_16.status.startswith("not supported")
    assert l1_32 == V.Ours("ok", 1.0, "BM=64", None)
    assert len(tuned) == 2 and all(p.dtype == "fp32" for p in tuned)  # fp16 never reached tune()
    assert [r.cudnn.time_ms for r in rows] == [2.0] * 4  # cuDNN is timed either way


def test_run_jobs_starts_nothing_after_the_deadline() -> None:
    now = [0.0]

    def tune_layer(problem: Conv2dProblem) -> V.Ours:
        now[0] += 10.0  # each layer takes 10 "seconds"
        return V.Ours("ok", 1.0, "BM=64")

    seen: list[str] = []
    jobs = V.plan(["vgg16"], [1], ["fp32"], None)
    rows = V.run_jobs(jobs, tune_layer, lambda p, dt: V.Cudnn("ok", 1.0), deadline=25.0, clock=lambda: now[0],
                      on_row=lambda r: seen.append(r.job.layer))  # fmt: skip
    assert [r.job.layer for r in rows] == seen == ["conv1_1", "conv1_2", "conv2_1"]  # started at t=0, 10, 20


def test_summarize_by_hand() -> None:
    rows = [
        _row("a", P1, ours_ms=1.0, cudnn_ms=2.0, count=3),  # ratio 2
        _row("b", P2, ours_ms=4.0, cudnn_ms=1.0),  # ratio 0.25
        _row("c", P2, ours_ms=None, cudnn_ms=1.0, dtype="fp16"),
        _row("a", P1, ours_ms=2.0, cudnn_ms=2.0, batch=32),
    ]
    s32, s16, s_b32 = V.summarize(rows)
    assert (s32["net"], s32["batch"], s32["dtype"], s32["layers"], s32["compared"]) == ("resnet50", 1, "fp32", 2, 2)
    assert s32["geomean_ratio"] == pytest.approx(math.sqrt(2.0 * 0.25))
    assert (s32["min_ratio"], s32["min_ratio_layer"]) == (0.25, "b")
    t1, t2 = P1.flops() / 1e-3 / 1e12, P2.flops() / 4e-3 / 1e12
    assert s32["geomean_tflops_ours"] == pytest.approx(math.sqrt(t1 * t2))
    assert s32["geomean_tflops_cudnn"] == pytest.approx(math.sqrt((P1.flops() / 2e-3) * (P2.flops() / 1e-3)) / 1e12)
    assert s32["net_ms_ours"] == 3 * 1.0 + 4.0 and s32["net_ms_cudnn"] == 3 * 2.0 + 1.0
    assert s32["net_ratio"] == pytest.approx(7.0 / 7.0)
    assert s16["compared"] == 0 and s16["geomean_ratio"] is None and s16["min_ratio"] is None
    assert s16["geomean_tflops_ours"] is None and s16["geomean_tflops_cudnn"] == pytest.approx(P2.flops() / 1e-3 / 1e12)
    assert s_b32["batch"] == 32 and s_b32["geomean_ratio"] == 1.0
    lines = V.summary_lines([s32, s16])
    assert "geomean 0.707, min 0.250 (b)" in lines[0] and "2/2 layers" in lines[0]
    assert lines[1] == "resnet50 batch 1 fp16: 0/1 layers compared (kptune has no result); cuDNN geomean " + (
        f"{P2.flops() / 1e-3 / 1e12:.2f} TFLOP/s"
    )
    assert "ours 7.000 ms, cuDNN 7.000 ms" in lines[0]


def test_markdown_table_is_one_grouped_table() -> None:
    rows = [
        _row("a", P1, 1.0, 2.0),
        _row("a", P1, None, 0.5, dtype="fp16"),
        _row("b", P2, 4.0, None),
        _row("a", P1, 2.0, 2.0, batch=32),
    ]
    table = V.markdown_table(rows, sgemm_tflops=50.0).splitlines()
    assert table[0] == V.TABLE_HEADER and set(table[1]) == {"|", "-"}
    assert len(table) == 2 + len(rows)
    assert len({line.count("|") for line in table}) == 1  # every line has every column
    body = [line.split(" | ") for line in table[2:]]
    assert [(c[0].strip("| "), c[1], c[2], c[3]) for c in body] == [
        ("resnet50", "1", "fp32", "a"), ("resnet50", "1", "fp32", "b"),
        ("resnet50", "1", "fp16", "a"), ("resnet50", "32", "fp32", "a"),
    ]  # fmt: skip
    a32 = body[0]
    assert a32[6:10] == ["1.0000", "BM=64,BN=64", "2.0000", "2.00"]
    assert a32[12].strip(" |") == f"{100 * P1.flops() / 1e-3 / 1e12 / 50.0:.0f}"
    assert body[1][8] == "error" and body[1][9] == "-"
    assert body[2][6] == "not supported" and body[2][7] == "-"


def test_report_is_json_and_written_atomically(tmp_path: Path) -> None:
    rows = [_row("a", P1, 1.0, 2.0), _row("a", P1, None, 0.5, dtype="fp16")]
    path = tmp_path / "vs_cudnn.json"
    common.write_json(path, V.report({"commit": "abc"}, rows, 50.0))
    doc = json.loads(path.read_text())
    assert doc["commit"] == "abc" and len(doc["rows"]) == 2 and len(doc["summary"]) == 2
    assert doc["rows"][0]["problem"] == P1.key() and doc["rows"][0]["ratio"] == 2.0
    assert doc["rows"][1]["ours"]["status"].startswith("not supported")
    assert [f.name for f in tmp_path.iterdir()] == ["vs_cudnn.json"]


def test_git_commit_falls_back_to_env_then_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    def ok(*a: Any, **k: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(a, 0, "1234abc\n", "")

    def not_a_repo(*a: Any, **k: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(a, 128, "", "fatal: not a git repository")

    def no_git(*a: Any, **k: Any) -> Any:
        raise FileNotFoundError("git")

    monkeypatch.setenv("KPTUNE_COMMIT", "feed42")
    assert common.git_commit(ok) == "feed42"  # the device's copied tree may hold a stale .git
    assert common.git_commit(not_a_repo) == "feed42"
    assert common.git_commit(no_git) == "feed42"
    monkeypatch.delenv("KPTUNE_COMMIT")
    assert common.git_commit(not_a_repo) == "unknown"


def test_bad_arguments_exit_2() -> None:
    with pytest.raises(SystemExit) as exc:
        V.parse_args(["--strategy", "random"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        V.parse_args(["--nets", "alexnet"])
    args = V.parse_args(["--strategy", "random", "--budget", "5", "--dtype", "fp32", "fp16", "--batches", "8"])
    assert (args.budget, args.dtype, args.batches, args.nets) == (5, ["fp32", "fp16"], [8], ["resnet50", "vgg16"])


def test_without_cuda_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert V.main(["--nets", "vgg16", "--out", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("vs_cudnn: torch ") and "no CUDA device" in err
    assert not list(tmp_path.iterdir())  # nothing written, no db created


class _HostEvent:
    """Stands in for torch.cuda.Event on the CPU: wall time between record() calls."""

    def __init__(self, enable_timing: bool = False) -> None:
        self.t = 0.0

    def record(self) -> None:
        self.t = time.perf_counter()

    def elapsed_time(self, end: _HostEvent) -> float:
        return (end.t - self.t) * 1e3


def _host_torch(torch: Any) -> Any:
    """The slice of torch that vs_cudnn uses, with torch.cuda answered by the CPU (events = wall clock)."""
    cuda = types.SimpleNamespace(
        Event=_HostEvent, synchronize=lambda: None, empty_cache=lambda: None, OutOfMemoryError=torch.OutOfMemoryError,
        _sleep=lambda cycles: time.sleep(cycles * 1e-9),  # a 1 GHz "GPU" clock
        get_device_properties=lambda i: types.SimpleNamespace(L2_cache_size=1 << 20, total_memory=1 << 32),
        get_device_name=lambda i: "host stand-in",
    )  # fmt: skip
    return types.SimpleNamespace(
        float32=torch.float32, float16=torch.float16, finfo=torch.finfo, nn=torch.nn, matmul=torch.matmul,
        inference_mode=torch.inference_mode, device=lambda *a: torch.device("cpu"), Generator=torch.Generator,
        empty=torch.empty, cuda=cuda, __version__=torch.__version__, version=torch.version, backends=torch.backends,
    )  # fmt: skip


def test_main_end_to_end_with_pocl_and_a_host_stand_in_for_cuda(
    cpu_device: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Everything main() does except real CUDA: kptune tunes on PoCL, 'cuDNN' is torch's CPU conv."""
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(V, "cuda_torch", lambda: _host_torch(torch))
    monkeypatch.setattr(V, "SGEMM_N", 256)
    argv = ["--nets", "resnet50", "--batches", "1", "--dtype", "fp32", "fp16", "--max-layers", "1",
            "--strategy", "random", "--budget", "1", "--device", cpu_device.spec, "--out", str(tmp_path)]  # fmt: skip
    assert V.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count(V.TABLE_HEADER) == 1 and "| resnet50 | 1 | fp16 | conv1 | 1 |" in out
    doc = json.loads((tmp_path / "vs_cudnn.json").read_text())
    assert (doc["done"], doc["jobs"], doc["stopped_by_time_limit"]) == (2, 2, False)
    assert doc["device"]["kptune_device"] == cpu_device.spec and doc["sgemm"]["n"] == 256
    assert doc["settings"]["kptune_timing"]["max_input_sets"] == V.MAX_COPIES
    assert 0.5e6 < doc["settings"]["cudnn_timing"]["sleep_cycles_per_ms"] <= 1e6  # time.sleep overshoots a little
    fp32, fp16 = doc["rows"]
    assert fp32["cudnn"]["held"] and fp32["cudnn"]["host_us"] > 0
    assert fp32["ours"]["status"] == "ok" and fp32["ours"]["tune"]["measured"] == 1 and fp32["ratio"] > 0
    assert fp32["cudnn"]["runs"] >= V.MIN_RUNS and fp32["cudnn"]["copies"] >= 2  # > 2 MiB of 640 KB input sets
    assert fp16["ours"]["status"] == "ok" and fp16["cudnn"]["time_ms"] > 0
    assert V.main(argv) == 0  # a rerun resumes from the perf db next to the JSON: nothing re-measured
    rerun = json.loads((tmp_path / "vs_cudnn.json").read_text())
    assert rerun["rows"][0]["ours"]["tune"]["resumed"] == 1 and rerun["rows"][0]["ours"]["tune"]["measured"] == 0


def test_event_times_queues_each_chunk_behind_one_gpu_sleep() -> None:
    torch = pytest.importorskip("torch")
    host = _host_torch(torch)
    sleeps: list[int] = []
    host.cuda._sleep = sleeps.append
    calls: list[int] = []
    times = V._event_times(host, calls.append, 130, first=5, hold=10.0)
    assert len(times) == 130 and calls == list(range(5, 135))
    assert sleeps == [640, 640, 20]  # chunks of HOLD_CHUNK=64 calls, 10 cycles each
    assert V._event_times(host, calls.append, 3) and len(sleeps) == 3  # no hold: no sleep
