"""The README's first command and its pipeline, run as a new user runs them.

One short `paradis demo` (fewer training and test images than the
quickstart's) in a fresh process writes its outputs under a temporary
``runs/demo``. Its output must tell the story its help promises: four
devices (three node daemons and an emulated serial board behind
`paradis bridge`), one lost, three. Then every command of the README's
"Pipeline" block runs verbatim with bash in that directory and must exit 0.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PIPELINE_HEADING = "## Pipeline"


def pipeline_commands(readme: str) -> list[str]:
    """The commands of the first ```bash block after the "## Pipeline" heading.

    Lines continued with a trailing backslash are joined; blank lines and
    comment-only lines are dropped; a trailing ``# comment`` stays (bash
    ignores it).
    """
    start = readme.find(f"\n{PIPELINE_HEADING}\n")
    if start < 0:
        raise AssertionError(f"README.md has no {PIPELINE_HEADING!r} section")
    block = re.search(r"```bash\n(.*?)```", readme[start:], re.S)
    if block is None:
        raise AssertionError(f"README.md's {PIPELINE_HEADING!r} section has no ```bash block")
    commands, pending = [], ""
    for line in block.group(1).splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.strip() and not line.lstrip().startswith("#"):
            commands.append(line.strip())
    return commands


def _env() -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """A short demo in a fresh process, its outputs in ``<tmp>/runs/demo``."""
    home = tmp_path_factory.mktemp("readme")
    proc = subprocess.run(
        [sys.executable, "-m", "paradis_tf.cli", "demo", "--workdir", "runs/demo", "--train-images", "4000",
         "--epochs", "1", "--test-images", "300"],
        cwd=home, env=_env(), capture_output=True, text=True, timeout=600,
    )
    return home, proc


def test_pipeline_block_is_found():
    commands = pipeline_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(commands) >= 4 and all(c.startswith("paradis ") for c in commands), commands
    assert all("runs/demo/" in c for c in commands), "every pipeline command works on the demo's outputs"
    assert pipeline_commands("x\n## Pipeline\n\n```bash\nparadis a \\\n  --b  # c\n\n# only a comment\n```\n") == [
        "paradis a    --b  # c"]


@pytest.mark.slow
def test_demo_shows_four_devices_one_lost_three(demo_run):
    home, proc = demo_run
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-4000:]
    # the fleet: three node daemons and the serial board behind its bridge
    fleet = [line.split() for line in out.splitlines() if re.match(r"(node\d|mcu-0) ", line)]
    assert sorted(row[0] for row in fleet) == ["mcu-0", "node0", "node1", "node2"], out
    assert {row[2] for row in fleet if row[0] == "mcu-0"} == {"serial-bridge"}
    assert {row[2] for row in fleet if row[0] != "mcu-0"} == {"grpc-node"}
    # the board really served a role of the four-device switch
    assert re.search(r"^4x0\.25 .*mcu-0", out, re.M), out
    assert re.search(r"^selected: 4x0\.25 on 4 devices", out, re.M), out
    assert re.search(r"^stopping node\d ", out, re.M), out
    assert re.search(r"^plan now: 3x0\.25 on 3 devices \(.*mcu-0", out, re.M), out
    assert "failed 0" in out
    work = home / "runs" / "demo"
    assert (work / "model.keras").is_file() and (work / "bundle" / "manifest.json").is_file()
    assert len(list((work / "images").glob("*/*.png"))) == 30


@pytest.mark.slow
def test_readme_pipeline_runs_as_written(demo_run):
    home, proc = demo_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    commands = pipeline_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    for command in commands:
        r = subprocess.run(["bash", "-c", command], cwd=home, env=_env(), capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"{command}\nexit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
