"""Webhook ingest benchmark: wahub against a raw aiohttp baseline, in the same run.

    python -m bench.ingest [--duration 10] [--connections 64] [--only wahub] [--json out.json]

Both servers get signed sandbox message webhooks, each with a unique message id, from
wrk at a fixed concurrency; see bench/README.md for what the table means.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sqlite3
import sys
import tempfile
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.loadgen import LoadError, LoadResult, run_python, run_wrk, wrk_path
from bench.payloads import SandboxBodies, write_request_files
from bench.server import Memory, ServerError, ServerProcess, free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
WEBHOOK_PATH = "/webhooks/sandbox"
RATIO_TARGET, RATIO_GOAL = 0.6, 0.8
P99_TARGET_MS = 25.0
RSS_TARGET_MB = 120.0
SIDES = {"baseline": "(a) aiohttp baseline", "wahub": "(b) wahub daemon"}


@dataclass
class SideResult:
    """One server's numbers over the measured window."""

    requests_per_second: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_request: float
    memory: Memory
    load: LoadResult
    warmup: LoadResult
    inbox_rows: int | None = None


class Bench:
    """Runs the configured sides against one set of pre-signed requests."""

    def __init__(self, args: argparse.Namespace, work_dir: Path) -> None:
        self.args = args
        self.work_dir = work_dir
        self.data_dir = work_dir / "requests"
        self.secret = secrets.token_hex(24)
        self.slices = args.threads if args.loadgen == "wrk" else 1

    def prepare(self) -> None:
        bodies = SandboxBodies()
        for phase, seconds in (("warmup", self.args.warmup), ("run", self.args.duration)):
            count = max(self.args.max_rate * seconds, self.slices)
            log(f"signing {count} {phase} requests ...")
            write_request_files(self.data_dir, phase, count, self.slices, self.secret, bodies)

    def load(self, server: ServerProcess, phase: str, seconds: int) -> LoadResult:
        url = server.url(WEBHOOK_PATH)
        if self.args.loadgen == "wrk":
            return run_wrk(url, self.data_dir, phase, self.args.threads, self.args.connections, seconds)
        paths = sorted(self.data_dir.glob(f"{phase}.*"))
        return run_python(url, paths, self.args.connections, seconds)

    def measure(self, server: ServerProcess) -> SideResult:
        server.wait_healthy(self.args.startup_timeout)
        log(f"{server.name}: warming up for {self.args.warmup} s ...")
        warmup = self.load(server, "warmup", self.args.warmup) if self.args.warmup else _NO_LOAD
        log(f"{server.name}: measuring for {self.args.duration} s ...")
        cpu_before = server.cpu_seconds()
        load = self.load(server, "run", self.args.duration)
        cpu = server.cpu_seconds() - cpu_before
        memory = server.memory()
        if load.requests == 0:
            raise LoadError(f"{server.name} answered no request in {self.args.duration} s")
        return SideResult(
            requests_per_second=load.requests_per_second,
            p50_ms=load.p50_ms,
            p99_ms=load.p99_ms,
            cpu_us_per_request=cpu / load.requests * 1e6,
            memory=memory,
            load=load,
            warmup=warmup,
        )

    def run_baseline(self) -> SideResult:
        env = {**os.environ, "WAHUB_BENCH_SECRET": self.secret, "PYTHONPATH": _python_path()}
        command = [sys.executable, "-m", "bench.baseline", "--port", str(port := free_port())]
        server = ServerProcess("baseline", command, port, self.work_dir, env=env)
        try:
            return self.measure(server)
        finally:
            server.stop()

    def run_wahub(self) -> SideResult:
        home = self.work_dir / "wahub"
        home.mkdir()
        port = free_port()
        config = home / "config.yaml"
        config.write_text(
            "wahub:\n"
            f"  http: {{host: 127.0.0.1, port: {port}}}\n"
            f"  database: sqlite:///{home}/wahub.db\n"
            "  log_level: warning\n"
            "providers:\n"
            "  - platform: sandbox\n"
            "    name: sandbox\n"
            f"    secret: {self.secret}\n"
        )
        command = [self.args.python, "-m", "wahub", "run", "-c", str(config)]
        env = {**os.environ, "PYTHONPATH": _python_path()}
        server = ServerProcess("wahub", command, port, self.work_dir, env=env, cwd=home)
        try:
            result = self.measure(server)
        finally:
            server.stop()
        result.inbox_rows = count_inbox_rows(home / "wahub.db")
        return result


_NO_LOAD = LoadResult(requests=0, seconds=0, ok=0, non_2xx=0, socket_errors=0, repeats=0, p50_ms=0, p99_ms=0)


def _python_path() -> str:
    """Existing PYTHONPATH first, then this checkout, so an uninstalled tree still runs."""
    return os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(REPO_ROOT)]))


def count_inbox_rows(database: Path) -> int:
    if not database.exists():
        raise ServerError(f"wahub left no database at {database}")
    # A plain read-write open: after a SIGKILL the WAL may still need replaying.
    with closing(sqlite3.connect(database)) as connection:
        try:
            (rows,) = connection.execute("SELECT COUNT(*) FROM inbox").fetchone()
        except sqlite3.Error as exc:
            raise ServerError(f"cannot count inbox rows in {database}: {exc}") from exc
    return int(rows)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Target:
    """One pass/fail line under the table."""

    name: str
    value: float
    limit: float
    passed: bool


def evaluate_targets(results: dict[str, SideResult]) -> list[Target]:
    targets = []
    if "baseline" in results and "wahub" in results:
        ratio = results["wahub"].requests_per_second / results["baseline"].requests_per_second
        targets.append(Target("req/s ratio b/a >=", ratio, RATIO_TARGET, ratio >= RATIO_TARGET))
    if "wahub" in results:
        wahub = results["wahub"]
        targets.append(Target("p99 ms <", wahub.p99_ms, P99_TARGET_MS, wahub.p99_ms < P99_TARGET_MS))
        peak = wahub.memory.hwm_mb
        targets.append(Target("peak RSS MB <", peak, RSS_TARGET_MB, peak < RSS_TARGET_MB))
    return targets


def print_table(args: argparse.Namespace, results: dict[str, SideResult]) -> None:
    threads = f" ({args.threads} threads)" if args.loadgen == "wrk" else " (client-bound)"
    print(
        f"\nwebhook ingest: POST {WEBHOOK_PATH}, {args.connections} connections, "
        f"{args.duration} s (+{args.warmup} s warm-up) per side, load from {args.loadgen}{threads}"
    )
    columns = ("req/s", "p50 ms", "p99 ms", "CPU us/req", "RSS MB", "HWM MB", "non-2xx", "sock err")
    header = f"{'side':<22}" + "".join(f"{column:>11}" for column in columns)
    print(header)
    print("-" * len(header))
    for side in args.sides:
        if side not in results:
            print(f"{SIDES[side]:<22}{'ERROR (see below)':>22}")
            continue
        r = results[side]
        cells = (
            f"{r.requests_per_second:.0f}",
            f"{r.p50_ms:.2f}",
            f"{r.p99_ms:.2f}",
            f"{r.cpu_us_per_request:.0f}",
            f"{r.memory.rss_mb:.1f}",
            f"{r.memory.hwm_mb:.1f}",
            str(r.load.non_2xx),
            str(r.load.socket_errors),
        )
        print(f"{SIDES[side]:<22}" + "".join(f"{cell:>11}" for cell in cells))
    for side, r in results.items():
        if r.load.repeats or r.warmup.repeats:
            print(
                f"warning: {SIDES[side]} used up its pre-signed requests and sent "
                f"{r.load.repeats + r.warmup.repeats} repeats; wahub dedupes repeats, which "
                f"flatters its numbers: raise --max-rate (now {args.max_rate})"
            )


def print_targets(targets: list[Target]) -> None:
    if not targets:
        return
    print("targets for wahub:")
    for target in targets:
        verdict = "PASS" if target.passed else "FAIL"
        line = f"  {target.name} {target.limit:g}: {target.value:.2f} {verdict}"
        if target.name.startswith("req/s ratio"):
            goal = "met" if target.value >= RATIO_GOAL else "not met"
            line += f" (goal {RATIO_GOAL:g} {goal})"
        print(line)


def report(args: argparse.Namespace, results: dict[str, SideResult], errors: list[str]) -> dict[str, object]:
    """Print the table, targets and inbox check; return the same facts for --json."""
    print_table(args, results)
    targets = evaluate_targets(results)
    if "baseline" in results and "wahub" in results:
        print(f"\nratio b/a of req/s: {targets[0].value:.2f}")
    print_targets(targets)
    settings = ("connections", "duration", "warmup", "threads", "loadgen", "max_rate")
    facts: dict[str, object] = {
        "settings": {key: getattr(args, key) for key in settings},
        "sides": {side: asdict(result) for side, result in results.items()},
        "targets": [asdict(target) for target in targets],
        "errors": errors,
    }
    if "baseline" in results and "wahub" in results:
        facts["ratio"] = targets[0].value
    if "wahub" in results:
        facts["inbox"] = check_inbox(results["wahub"], errors)
    for error in errors:
        print(f"\nERROR: {error}")
    return facts


def check_inbox(wahub: SideResult, errors: list[str]) -> dict[str, object]:
    """Every request answered 2xx (warm-up included) must have its inbox row."""
    accepted = wahub.warmup.ok + wahub.load.ok
    expected = accepted - wahub.warmup.repeats - wahub.load.repeats
    rows = wahub.inbox_rows or 0
    stored = rows >= expected
    print(f"\ninbox: {rows} rows for {accepted} 2xx responses (warm-up included)", end="")
    if expected != accepted:
        print(f", {expected} of them unique", end="")
    if stored:
        print(": every accepted webhook is stored")
    else:
        print(": ROWS MISSING")
        errors.append(f"wahub answered 2xx to {expected - rows} webhooks missing from its inbox table")
    return {"rows": rows, "accepted": accepted, "expected": expected, "all_stored": stored}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description="Webhook ingest benchmark.")
    parser.add_argument("--connections", "-c", type=int, default=64, help="concurrent connections (64)")
    parser.add_argument("--duration", "-d", type=int, default=10, help="measured seconds per side (10)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds per side, not measured (2)")
    parser.add_argument("--threads", "-t", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--max-rate", type=int, default=20000, help="req/s the pre-signed requests last for (20000)")
    parser.add_argument("--only", choices=list(SIDES), help="run one side only")
    parser.add_argument("--loadgen", choices=("wrk", "python"), help="load generator (wrk when installed)")
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs `-m wahub run`")
    parser.add_argument("--startup-timeout", type=float, default=60, help="seconds to wait for /healthz (60)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON to PATH")
    args = parser.parse_args(argv)
    if args.connections < args.threads or min(args.duration, args.threads, args.max_rate) < 1 or args.warmup < 0:
        parser.error("need duration, threads, max-rate >= 1, warmup >= 0 and connections >= threads")
    args.sides = [args.only] if args.only else list(SIDES)
    if args.loadgen is None:
        args.loadgen = "wrk" if wrk_path() else "python"
    if args.loadgen == "python":
        log(
            "warning: load from the Python generator (wrk is not installed or not chosen): "
            "the numbers are client-bound, not the servers' limits"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: dict[str, SideResult] = {}
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="wahub-bench-") as work:
        bench = Bench(args, Path(work))
        bench.prepare()
        runners = {"baseline": bench.run_baseline, "wahub": bench.run_wahub}
        for side in args.sides:
            try:
                results[side] = runners[side]()
            except (ServerError, LoadError) as exc:
                errors.append(f"{SIDES[side]}: {exc}")
    facts = report(args, results, errors)
    if args.json:
        args.json.write_text(json.dumps(facts, indent=2) + "\n")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
