"""Every benchmark, one after the other, and one JSON summary of them.

    python -m bench [--quick] [--json bench-results.json]

Runs ``bench.ingest``, ``bench.replies``, ``bench.outbound`` and ``bench.replicas`` (each printing its own
report), then prints every target with PASS or FAIL and writes the summary: per
benchmark its settings, results, targets and errors. Exits 1 when a benchmark broke
(a server did not start, a reply was refused, an accepted webhook was not stored),
never because a target was missed. What ``make bench`` runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.report import Target, target_line

#: Each benchmark with the arguments ``--quick`` gives it.
BENCHMARKS = {
    "ingest": ["--quick"],
    "replies": ["--quick"],
    "outbound": ["--messages", "300", "--paced", "80"],
    "replicas": ["--quick"],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Run every benchmark; write a JSON summary.")
    parser.add_argument("--quick", action="store_true", help="a check that they run (the numbers mean little)")
    parser.add_argument("--json", type=Path, default=Path("bench-results.json"), help="summary (bench-results.json)")
    args = parser.parse_args(argv)
    summary: dict[str, Any] = {}
    broken = []
    with tempfile.TemporaryDirectory(prefix="wahub-bench-") as work:
        for name, quick in BENCHMARKS.items():
            out = Path(work) / f"{name}.json"
            command = [sys.executable, "-m", f"bench.{name}", "--json", str(out), *(quick if args.quick else [])]
            print(f"== {name}: {' '.join(command[1:])}", flush=True)
            code = subprocess.run(command, check=False).returncode
            summary[name] = json.loads(out.read_text()) if out.exists() else {"errors": [f"exit code {code}"]}
            if code:
                broken.append(name)
    summary["quick"] = args.quick
    args.json.write_text(json.dumps(summary, indent=2) + "\n")
    print("\n== targets")
    for name in BENCHMARKS:
        for target in summary[name].get("targets", []):
            print(f"  {name:9}" + target_line(Target(**target)))
    print(f"summary written to {args.json}" + (f"; broken: {', '.join(broken)}" if broken else ""))
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
