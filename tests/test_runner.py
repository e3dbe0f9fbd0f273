"""The runner on a real device (PoCL): outcomes for real faults, watchdog, worker restarts."""

from __future__ import annotations

import dataclasses
import math

from families_for_tests import AXPY_FAULTY, AxpyProblem, faulty

from kptune.device import DeviceInfo
from kptune.measurement import Outcome, TimingSettings
from kptune.runner import ProblemData, Runner
from kptune.space import Config

FAST = TimingSettings(target_ms=1.0, max_runs=5, timeout_s=20.0)


def test_each_fault_is_an_outcome_and_the_search_goes_on(cpu_device: DeviceInfo) -> None:
    with Runner(AXPY_FAULTY, cpu_device, FAST) as runner:
        runner.set_problem(AxpyProblem(n=4096))
        good = runner.measure(faulty(0))
        assert good.outcome is Outcome.OK and good.time_ms and good.runs >= 5
        assert good.rel_error is not None and good.rel_error < 1e-6

        assert runner.measure(faulty(1)).outcome is Outcome.COMPILE_ERROR
        wrong = runner.measure(faulty(2))
        assert wrong.outcome is Outcome.WRONG_RESULT and "relative error" in wrong.error
        too_big = runner.measure(faulty(5))  # 8192 work-items per group: past the device's limit
        assert too_big.outcome is Outcome.LAUNCH_ERROR and too_big.error, too_big

        bad = Config.of({"MODE": 0, "WG": 3, "ELEMS": 1})
        assert runner.measure(bad).outcome is Outcome.INVALID
        assert runner.restarts == 0
        assert runner.measure(faulty(0)).outcome is Outcome.OK


def test_hung_kernel_is_killed_by_the_watchdog(cpu_device: DeviceInfo) -> None:
    settings = TimingSettings(target_ms=1.0, max_runs=5, timeout_s=8.0)
    with Runner(AXPY_FAULTY, cpu_device, settings) as runner:
        runner.set_problem(AxpyProblem(n=256))
        runner.measure(faulty(0))  # worker up and warm
        hung = runner.measure(faulty(3))
        assert hung.outcome is Outcome.TIMEOUT
        assert runner.restarts == 1
        assert runner.measure(faulty(0)).outcome is Outcome.OK


def test_crashing_kernel_costs_one_config(cpu_device: DeviceInfo) -> None:
    with Runner(AXPY_FAULTY, cpu_device, FAST) as runner:
        runner.set_problem(AxpyProblem(n=4096))
        crash = runner.measure(faulty(4))
        assert crash.outcome in (Outcome.LAUNCH_ERROR, Outcome.WRONG_RESULT), crash
        assert runner.measure(faulty(0)).outcome is Outcome.OK


def test_early_stop_for_configs_far_slower_than_the_best(cpu_device: DeviceInfo) -> None:
    """A config far slower than the best stops at its verifying launch, or else after its first batch.

    The bests are 1/100 and 1/10 of the config's own time, so a CPU's noise (up to 2x between runs
    on a busy machine) cannot carry it within the stop factor (2x) of them."""
    settings = TimingSettings(target_ms=50.0, max_runs=100, early_stop_factor=2.0)
    batch_only = dataclasses.replace(settings, verify_stop_factor=math.inf)  # only the first batch can stop it
    with Runner(AXPY_FAULTY, cpu_device, settings) as runner:
        runner.set_problem(AxpyProblem(n=1 << 16))
        full = runner.measure(faulty(0))
        stopped = runner.measure(faulty(0), best_ms=(full.time_ms or 1.0) / 100)
    with Runner(AXPY_FAULTY, cpu_device, batch_only) as runner:
        runner.set_problem(AxpyProblem(n=1 << 16))
        near = runner.measure(faulty(0), best_ms=(full.min_ms or 1.0) / 10)
    assert full.runs > settings.first_batch
    assert stopped.outcome is Outcome.OK and stopped.runs == 1
    assert near.outcome is Outcome.OK and near.runs == settings.first_batch


def test_a_worker_killed_from_outside_is_not_a_kernel_fault(cpu_device: DeviceInfo) -> None:
    """SIGKILL from outside (someone stopping the run) is not the kernel's doing: the config is measured
    once more in a fresh worker instead of being recorded as a launch error forever."""
    import os
    import signal
    import threading

    with Runner(AXPY_FAULTY, cpu_device, TimingSettings(target_ms=1.0, max_runs=5, timeout_s=4.0)) as runner:
        runner.set_problem(AxpyProblem(n=4096))
        assert runner.measure(faulty(0)).outcome is Outcome.OK
        assert runner._worker is not None
        threading.Timer(1.0, os.kill, (runner._worker.proc.pid, signal.SIGKILL)).start()
        hung = runner.measure(faulty(3))  # killed after 1 s; measured again: the watchdog's timeout
        assert hung.outcome is Outcome.TIMEOUT and runner.restarts == 2, hung
        assert runner.measure(faulty(0)).outcome is Outcome.OK


def test_measure_each_charges_each_fault_to_its_own_config(cpu_device: DeviceInfo) -> None:
    """With a config queued ahead in the worker, a crash or hang is still charged to the config that
    caused it, and the queued configs are measured in a fresh worker, in order."""
    settings = TimingSettings(target_ms=1.0, max_runs=5, timeout_s=8.0)
    other = Config.of({"MODE": 0, "WG": 32, "ELEMS": 1})
    bad = Config.of({"MODE": 0, "WG": 3, "ELEMS": 1})
    configs = [faulty(0), faulty(4), other, bad, faulty(2), faulty(3), faulty(0), other]
    with Runner(AXPY_FAULTY, cpu_device, settings) as runner:
        runner.set_problem(AxpyProblem(n=4096))
        got = list(runner.measure_each(configs, ahead=2))
    assert [m.config for m in got] == configs
    outcomes = [m.outcome for m in got]
    assert outcomes[1] in (Outcome.LAUNCH_ERROR, Outcome.WRONG_RESULT), got[1]
    assert outcomes[:1] + outcomes[2:] == [Outcome.OK, Outcome.OK, Outcome.INVALID, Outcome.WRONG_RESULT,
                                           Outcome.TIMEOUT, Outcome.OK, Outcome.OK]  # fmt: skip
    assert runner.restarts >= 1


def test_stop_rule_follows_the_device_kind() -> None:
    gpu, cpu = TimingSettings().stop_rule("gpu"), TimingSettings().stop_rule("cpu")
    assert gpu.verify_factor < cpu.verify_factor and gpu.early_factor < cpu.early_factor
    assert gpu.early_slack_ms > 0 == cpu.early_slack_ms
    # a GPU's verifying launch stops a config only past its factor and the first launch's slack
    assert not gpu.stops_after_verify(0.051, 0.0155) and gpu.stops_after_verify(1.6, 1.0)
    assert not gpu.stops_after_first_batch([1.3, 1.1, 1.5], 1.0) and gpu.stops_after_first_batch([1.3, 1.25], 1.0)
    assert not gpu.stops_after_verify(9.0, None)
    rule = TimingSettings(early_stop_factor=3.0, stop_slack_ms=0.0).stop_rule("gpu")
    assert (rule.early_factor, rule.early_slack_ms) == (3.0, 0.0)


def test_problem_data_is_made_once_for_every_runner_sharing_it() -> None:
    import threading

    data = ProblemData(keep=2)
    problems = [AxpyProblem(n=1024 * (i + 1)) for i in range(3)]
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(data.get(AXPY_FAULTY, problems[0], 0))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 4 and all(g is got[0] for g in got)
    for p in problems[1:]:
        data.get(AXPY_FAULTY, p, 0)
    assert data.get(AXPY_FAULTY, problems[0], 0) is not got[0]  # only the 2 latest are kept


def test_an_abandoned_measure_each_leaves_no_result_for_the_next_caller(cpu_device: DeviceInfo) -> None:
    other = Config.of({"MODE": 0, "WG": 32, "ELEMS": 1})
    with Runner(AXPY_FAULTY, cpu_device, FAST) as runner:
        runner.set_problem(AxpyProblem(n=4096))
        each = runner.measure_each([faulty(0), other, faulty(0)], ahead=2)
        assert next(each).config == faulty(0)
        each.close()  # two configs still queued in the worker
        assert runner.measure(other).config == other and runner.measure(faulty(2)).outcome is Outcome.WRONG_RESULT
