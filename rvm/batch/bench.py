"""`python -m rvm.batch.bench CLIP... --model ARTIFACT`: batch throughput of each executor layout, side by side.

Runs the same batch (every clip `--copies` times) on the local pool as 1 worker x 2 threads and as 2 workers x 1
thread, and on a local Ray with one actor per core, in alternating rounds, and prints medians: wall time,
start-up (batch start to the first job running), jobs/hour and frames/s over the steady span (first job running
to last job done), a worker's start (its first job's overhead), and the executor's overhead on later jobs (the
driver's time for a job less the worker's).
"""
import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Dict, List

from rvm.batch.driver import batch_convert
from rvm.batch.jobs import BatchRequest, ledger_path
from rvm.media.request import ConvertRequest

# BatchRequest fields of each executor layout
LAYOUTS = {"local 1x2": dict(workers=1, threads=2), "local 2x1": dict(workers=2, threads=1),
           "ray 2x1": dict(use_ray=True, threads=1)}


def measure(request: BatchRequest) -> Dict[str, float]:
    """One run of `request`, into a fresh folder."""
    folder = Path(tempfile.mkdtemp(prefix="rvm-batch-bench-"))
    try:
        started = time.time()
        result = batch_convert(replace(request, output_dir=folder))
        wall = time.time() - started
        assert result.succeeded, result.jobs
        records = [json.loads(line) for line in ledger_path(folder).read_text().splitlines()]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    first = min(r["time"] for r in records if r["state"] == "running")
    last = max(r["time"] for r in records if r["state"] == "done")
    frames = sum(job["frames"] for job in result.jobs)
    done = sorted((r for r in records if r["state"] == "done"), key=lambda r: r["time"])
    cold, warm, seen = [], [], set()
    for record in done:  # a worker's first job carries its start (spawn or actor, imports, model load)
        (warm if record["worker"] in seen else cold).append(record["overhead_s"])
        seen.add(record["worker"])
    span = last - first
    return {"wall_s": wall, "startup_s": first - started, "jobs_per_hour": len(result.jobs) / span * 3600,
            "frames_per_s": frames / span, "worker_start_s": statistics.median(cold),
            "job_overhead_ms": 1000 * statistics.median(warm) if warm else float("nan")}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rvm.batch.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("clips", nargs="+")
    parser.add_argument("--model", required=True)
    parser.add_argument("--copies", type=int, default=2, help="each clip this many times (default 2)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--input-resize", type=int, nargs=2, metavar=("W", "H"))
    parser.add_argument("--outputs", default="composition,alpha")
    parser.add_argument("--layouts", default=",".join(LAYOUTS))
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="rvm-batch-bench-inputs-"))
    inputs = []
    for copy in range(args.copies):  # distinct names: each copy is its own job
        for clip in args.clips:
            link = folder / f"{Path(clip).stem}_{copy}{Path(clip).suffix}"
            os.symlink(Path(clip).absolute(), link)
            inputs.append(str(link))
    convert = ConvertRequest(input_resize=tuple(args.input_resize) if args.input_resize else None, model=args.model,
                             progress=False)
    runs: Dict[str, List[dict]] = {name: [] for name in args.layouts.split(",")}
    for round_ in range(args.rounds):
        for name in runs:
            runs[name].append(measure(BatchRequest(inputs, convert=convert, outputs=args.outputs.split(","),
                                                   **LAYOUTS[name])))
            print(f"round {round_ + 1} {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in runs[name][-1].items()),
                  flush=True)
    print(f"\n{len(inputs)} jobs, medians of {args.rounds} alternating rounds:")
    for name, measured in runs.items():
        print(f"{name:10s} " + ", ".join(f"{k} {statistics.median(m[k] for m in measured):.2f}"
                                          for k in measured[0]))
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
