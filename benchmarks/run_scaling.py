"""Peak memory, wall time and disk of `agfsync generate` as the number of prompts grows.

What it measures: for each `--prompts` count it writes a prompt file (the offline
sample's 24 prompts cycled, each copy with its own id and a numbered variant of
the text, QA pairs kept), runs `agfsync generate --preset offline` on it in a fresh
distilabel cache, and polls the resident memory of the whole process tree
(distilabel runs every step in its own process) every 0.2 s. It reports the peak
of the tree's total RSS, the peak of the largest single process, the peak of the main
process's anonymous memory (its RSS less file-backed pages such as memory-mapped
Arrow files), the wall time and
the size of the output folder and of everything the run wrote (output folder and
distilabel cache, hard-linked files counted once). A flat peak as prompts grow means images and
batches stream through disk rather than accumulating in memory.

From the run's `pipeline.log` it also reads how long the image and judging steps
were busy (from "Processing batch N" to "sending batch N", summed over batches; the
log has whole seconds) and when the first batch started: the figures that
`agfsync estimate`'s throughput profile holds (`agfsync/data/estimate.yaml`).

Example:
    python benchmarks/run_scaling.py --prompts 50,200,800 --json scaling.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from agfsync.testing.prompt_files import write_scaled_prompts

POLL_SECONDS = 0.2
LOG_LINE = re.compile(
    r"\[(?P<time>[\d-]+ [\d:]+)\] INFO +(?:📦 Processing batch (?P<start>\d+) in "
    r"'(?P<step>\w+)'|📨 Step '(?P<sender>\w+)' sending batch (?P<end>\d+))"
)


def step_times(log: Path) -> dict[str, float]:
    """Busy seconds of each step (batch start to batch sent, summed) and the wall-clock
    time (epoch seconds) of the first batch any step started."""
    started: dict[tuple[str, str], float] = {}
    busy: dict[str, float] = {}
    first = None
    for match in LOG_LINE.finditer(log.read_text(encoding="utf-8")):
        moment = time.mktime(time.strptime(match["time"], "%Y-%m-%d %H:%M:%S"))
        if match["step"]:
            started[(match["step"], match["start"])] = moment
            first = moment if first is None else min(first, moment)
        elif (match["sender"], match["end"]) in started:
            step = match["sender"]
            busy[step] = busy.get(step, 0.0) + moment - started[(step, match["end"])]
    return {
        **{f"{step}_busy_s": seconds for step, seconds in busy.items()},
        "first_batch": first or 0,
    }


def unique_bytes(folders: list[Path]) -> int:
    """Bytes of the files under `folders`, each file once however many hard links it has
    (the dataset folder's candidates are links to the run cache's)."""
    seen: dict[tuple[int, int], int] = {}
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink():
                status = path.stat()
                seen[(status.st_dev, status.st_ino)] = status.st_size
    return sum(seen.values())


def tree_rss(process: psutil.Process) -> tuple[int, int]:
    """(total, largest) resident bytes of a process and its descendants."""
    sizes = []
    for member in [process, *process.children(recursive=True)]:
        try:
            sizes.append(member.memory_info().rss)
        except psutil.Error:
            continue
    return sum(sizes), max(sizes, default=0)


def anonymous_rss(process: psutil.Process) -> int:
    """Resident bytes of `process` that no file backs: its heap, not the pages of
    memory-mapped Arrow files (which count in RSS, and the kernel can drop)."""
    try:
        memory = process.memory_info()
    except psutil.Error:
        return 0
    return int(memory.rss - memory.shared)


def measure(count: int, work: Path, extra_args: list[str]) -> dict[str, Any]:
    """One fresh run (its own cache and output folder, even for a repeated count)."""
    work = Path(tempfile.mkdtemp(prefix=f"{count}-", dir=work))
    prompts = work / f"prompts-{count}.jsonl"
    write_scaled_prompts(prompts, count)
    output = work / f"out-{count}"
    env = {**os.environ, "DISTILABEL_CACHE_DIR": str(work / f"cache-{count}")}
    command = [
        str(Path(sys.executable).with_name("agfsync")),
        "generate",
        "--preset",
        "offline",
        "--prompts",
        str(prompts),
        "-o",
        str(output),
        *extra_args,
    ]
    started = time.perf_counter()
    launched = time.time()
    # A file, not a pipe: an unread pipe fills up and blocks the step processes' logging.
    log = work / f"stderr-{count}.log"
    with log.open("wb") as stderr:
        child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        process = psutil.Process(child.pid)
        peak_total = peak_single = peak_main_anonymous = 0
        while child.poll() is None:
            total, single = tree_rss(process)
            peak_total, peak_single = max(peak_total, total), max(peak_single, single)
            peak_main_anonymous = max(peak_main_anonymous, anonymous_rss(process))
            time.sleep(POLL_SECONDS)
    seconds = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(log.read_text(errors="replace")[-3000:])
    disk = unique_bytes([output])
    run_disk = unique_bytes([output, work / f"cache-{count}"])
    times = step_times(output / "pipeline.log")
    return {
        "prompts": count,
        "seconds": round(seconds, 1),
        "first_batch_after_s": round(times.pop("first_batch") - launched, 1),
        **{name: round(value, 1) for name, value in times.items()},
        "peak_tree_rss_mib": round(peak_total / 2**20),
        "peak_process_rss_mib": round(peak_single / 2**20),
        "peak_main_anonymous_mib": round(peak_main_anonymous / 2**20),
        "output_mib": round(disk / 2**20, 1),
        "run_disk_mib": round(run_disk / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", default="50,200,800", help="comma-separated counts")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument("extra", nargs="*", help="more `agfsync generate` arguments")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="agfsync-scaling-") as tmp:
        for count in (int(value) for value in args.prompts.split(",")):
            result = measure(count, Path(tmp), args.extra)
            print(json.dumps(result), flush=True)
            results.append(result)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
