"""Result files: the machine's description, one JSON file per scenario, its PNG plot."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

RESULT_VERSION = 1


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (or the platform's processor)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_kib() -> int | None:
    """MemTotal from ``/proc/meminfo``."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def source_info(source: Path) -> dict[str, Any]:
    """Which code a ``--server-source`` checkout holds: its path and git commit
    (None where git cannot tell), and whether it has uncommitted changes."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"path": str(source), "commit": git("rev-parse", "HEAD"), "modified": None if status is None else bool(status)}


def machine_info() -> dict[str, Any]:
    """What a reader needs to judge the numbers: cores, memory, CPU, versions, load."""
    import twisted

    try:
        import resource

        nofile = list(resource.getrlimit(resource.RLIMIT_NOFILE))
    except (ImportError, OSError):
        nofile = []
    return {
        "nproc": os.cpu_count(),
        "memory_kib": memory_kib(),
        "cpu_model": cpu_model(),
        "python": sys.version.split()[0],
        "twisted": twisted.__version__,
        "platform": platform.platform(),
        "load_average": load_average(),
        "open_files_limit": nofile,
    }


def to_jsonable(value: Any) -> Any:
    """Convert tuples, sets and non-string keys so ``json`` accepts the value."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(to_jsonable(v) for v in value)
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    return value


def write_result(output: Path, name: str, result: dict[str, Any], *, stem: str | None = None) -> Path:
    """Write ``<output>/<stem>.json`` (atomically: a reader never sees half a file).

    Args:
        output: the results directory (created if missing).
        name: the scenario's name.
        result: the scenario's result; ``verified`` must be present.
        stem: the file's name without ``.json`` (default ``name``; ``one-to-one@2+2``
            for a scenario run on another setup than standalone SQLite).

    Returns:
        The path written.
    """
    if "verified" not in result:
        raise ValueError("a result must say whether it was verified")
    output.mkdir(parents=True, exist_ok=True)
    path = output / f"{stem or name}.json"
    tmp = path.with_suffix(".json.tmp")
    data = {"version": RESULT_VERSION, "scenario": name, **result}
    tmp.write_text(json.dumps(to_jsonable(data), indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def write_plot(output: Path, name: str, draw: Callable[[Any], None], *, size: tuple[float, float] = (10, 4.5)) -> Path:
    """Draw a figure with matplotlib's Agg backend and save ``<output>/<name>.png``.

    Args:
        draw: called with the new ``Figure``; adds axes and plots.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    output.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=size, dpi=100)
    draw(figure)
    figure.tight_layout()
    path = output / f"{name}.png"
    figure.savefig(path)
    return path


def read_result(path: Path) -> dict[str, Any]:
    """A result file's content."""
    data: dict[str, Any] = json.loads(path.read_text())
    return data
