"""The README's first command, as a fresh CPU-only machine runs it: autotune on the OpenCL CPU
device with a model made for a CPU device (kptune ships one), every candidate measured."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from kptune.local_search import LOCAL
from kptune.neighbours import COVER, NEIGHBOURS

pytest.importorskip("torch")

README = Path(__file__).resolve().parents[1] / "README.md"


def _main_command() -> list[str]:
    """The kptune arguments of the README's first command (after `bash scripts/setup.sh && .venv/bin/`)."""
    first = next(line for line in README.read_text().splitlines() if "kptune autotune" in line)
    match = re.search(r"\.venv/bin/kptune (autotune .*?)\s+#", first)
    assert match, first
    return shlex.split(match.group(1))


def test_the_readme_main_command_autotunes_with_a_model(tmp_path: Path, cpu_device) -> None:  # type: ignore[no-untyped-def]
    args = _main_command()
    assert args[0] == "autotune" and "--shape" in args
    run = subprocess.run([sys.executable, "-m", "kptune", *args, "--device", cpu_device.spec, "--json",
                          "--db", str(tmp_path / "perf.db")], capture_output=True, text=True, timeout=900)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout)
    assert result["source"] == "model", result["note"]
    most = 5 + NEIGHBOURS + COVER + LOCAL  # the model's 5, up to that many lent by the tuned shapes, and searched
    assert result["best"] is not None and 5 <= len(result["candidates"]) <= most
    assert all(c["outcome"] == "ok" for c in result["candidates"])
