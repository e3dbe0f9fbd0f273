"""benchmarks/local_search_offline.py: the neighbourhood it searches, and a run on the shipped PoCL dataset."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from kptune import dataset as ds
from kptune.device import DeviceInfo
from kptune.kernel import get_family
from kptune.problem import Conv2dProblem
from kptune.space import Config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from local_search_offline import local_search, neighbours  # noqa: E402


def test_the_neighbours_are_valid_and_one_step_along_one_or_two_parameters(cpu_device: DeviceInfo) -> None:
    space = get_family("conv2d_fwd").space
    problem = Conv2dProblem.parse("n=1,c=32,h=14,w=14,k=64,r=3,s=3,pad=1")
    for base in space.configs(problem, cpu_device)[::97]:
        near = neighbours(space, problem, cpu_device, base.key())
        assert near and len(set(near)) == len(near) and base.key() not in near
        for key in near:
            config = Config.parse(key)
            assert space.valid(problem, cpu_device, config)
            steps = [abs(p.values.index(a) - p.values.index(b))
                     for p, a, b in zip(space.params, base.values(), config.values(), strict=True)]  # fmt: skip
            assert max(steps) == 1 and 1 <= sum(steps) <= 2


def test_the_search_spends_its_budget_in_rounds_from_the_fastest_and_never_loses_it() -> None:
    times = {"a": 2.0, "b": 3.0, "a1": 1.5, "a2": 2.5, "a11": 1.0, "b1": 0.5}
    near = {"a": ["a2", "a1"], "a1": ["a11", "a"], "b": ["b1"], "a11": [], "a2": [], "b1": []}
    expand = near.__getitem__

    def alphabetical(keys: list[str]) -> list[str]:
        return sorted(keys)

    assert local_search(["a", "b"], 0, times, expand, alphabetical) == 2.0
    assert local_search(["a", "b"], 1, times, expand, alphabetical) == 1.5  # a's likeliest neighbour first
    assert local_search(["a", "b"], 2, times, expand, alphabetical) == 1.5  # a round: a1 and a2 together
    assert local_search(["a", "b"], 3, times, expand, alphabetical) == 1.0  # then from a1, the fastest
    assert local_search(["a", "b"], 9, times, expand, alphabetical) == 0.5  # and from b once a's are spent
    assert local_search(["gone"], 5, times, expand, alphabetical) == float("inf")  # nothing ran: nothing to search


def test_a_run_on_the_shipped_cpu_dataset_scores_every_set(tmp_path: Path) -> None:
    dataset = ROOT / "kptune" / "data" / "dataset-pocl-cpu.db.gz"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "local_search_offline.py"), "--dataset",
                          str(dataset), "--more", "5", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)  # fmt: skip
    assert run.returncode == 0, run.stderr
    doc = json.loads((tmp_path / "local_search_offline.json").read_text())
    test = [p for p in ds.load(dataset).split("test") if ",dtype=fp32," in p.key]
    assert [r["problem"] for r in doc["rows"]] == [p.key for p in test]
    for row in doc["rows"]:  # more measured never loses the fastest found; none beats the table's fastest
        assert 0 <= row["autotune"] <= row["local 5"] <= 1.0 and row["autotune"] <= row["lent 5"] <= 1.0
    assert any(row["autotune"] > 0 for row in doc["rows"])  # PoCL's test problems keep 24 sampled configs: some hit
    assert doc["summary"]["autotune"]["n"] == len(test)
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "local_search_offline.py"), "--compare",
                          str(tmp_path / "none.db")], capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.startswith("local_search_offline: ") and "Traceback" not in bad.stderr
