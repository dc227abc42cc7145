"""Webhook ingest benchmark: wahub against a raw aiohttp baseline, in the same run.

    python -m bench.ingest [--rounds 3] [--duration 10] [--quick] [--only wahub] [--json out.json]

Both servers get signed Meta Cloud API webhooks (one user message to three statuses,
every id unique) from wrk at a fixed concurrency, the server pinned to one CPU and the
load to the others; wahub runs its whole pipeline, replying through a fake Graph API.
See bench/README.md for what the table means.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sqlite3
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from bench.graph import READY_MARKER
from bench.loadgen import LoadError, LoadResult, run_python, run_wrk, wrk_path
from bench.payloads import CloudBodies, write_request_files
from bench.report import SIDES, Pipeline, SideResult, report
from bench.server import (
    CpuPlan,
    ServerError,
    ServerProcess,
    add_daemon_options,
    describe_cpus,
    free_port,
    pinned,
    plan_cpus,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
WEBHOOK_PATH = "/webhooks/main"
_NO_LOAD = LoadResult(requests=0, seconds=0, ok=0, non_2xx=0, socket_errors=0, repeats=0, p50_ms=0, p99_ms=0)


class Bench:
    """Runs the configured sides, round after round, against one set of pre-signed requests."""

    def __init__(self, args: argparse.Namespace, work_dir: Path, cpus: CpuPlan | None) -> None:
        self.args = args
        self.work_dir = work_dir
        self.data_dir = work_dir / "requests"
        self.secret = secrets.token_hex(24)
        self.slices = args.threads if args.loadgen == "wrk" else 1
        self.cpus = cpus
        self.graph: ServerProcess | None = None
        self.graph_entry: dict[str, Any] = {}

    def prepare(self) -> None:
        bodies = CloudBodies()
        for phase, seconds in (("warmup", self.args.warmup), ("run", self.args.duration)):
            count = max(self.args.max_rate * seconds, self.slices)
            log(f"signing {count} {phase} requests ...")
            write_request_files(self.data_dir, phase, count, self.slices, self.secret, bodies)

    def start_graph(self) -> None:
        """The fake Graph API wahub replies through, on the load generator's CPUs."""
        command = [sys.executable, "-m", "bench.graph"]
        self.graph = ServerProcess("graph", command, 0, self.work_dir, env=_env())
        self.graph_entry = json.loads(self.graph.wait_line(READY_MARKER, self.args.startup_timeout))

    def stop_graph(self, errors: list[str]) -> None:
        """Stop the fake Graph API; a reply it refused is an error of the run."""
        if self.graph is None:
            return
        self.graph.stop()
        summary = json.loads(self.graph.wait_line(READY_MARKER, 5, after=1))
        if summary["schema_errors"]:
            errors.append(f"the fake Graph API refused replies: {summary['schema_errors']}")

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
        env = _env(WAHUB_BENCH_SECRET=self.secret)
        command = [sys.executable, "-m", "bench.baseline", "--port", str(port := free_port())]
        server = ServerProcess("baseline", pinned(command, self.cpus), port, self.work_dir, env=env)
        try:
            return self.measure(server)
        finally:
            server.stop()

    def run_wahub(self, round_number: int) -> SideResult:
        home = self.work_dir / f"wahub-{round_number}"
        home.mkdir()
        port = free_port()
        config = home / "config.yaml"
        config.write_text(wahub_config(port, home, {**self.graph_entry, "app_secret": self.secret}))
        command = [self.args.python, "-m", "wahub", "run", "-c", str(config)]
        server = ServerProcess("wahub", pinned(command, self.cpus), port, self.work_dir, env=_env(), cwd=home)
        try:
            result = self.measure(server)
            window_cpu = result.cpu_us_per_request * result.load.requests / 1e6
            result.pipeline = self.drain(server, result.load.requests, window_cpu)
        finally:
            server.stop()
        result.inbox_rows = count_inbox_rows(home / "wahub.db")
        return result

    def drain(self, server: ServerProcess, requests: int, window_cpu: float) -> Pipeline:
        """Wait for the inbox workers to process what the load left; measure how long it takes."""
        cpu_before = server.cpu_seconds()
        started = time.monotonic()
        pending = left = int(server.metric("wahub_inbox_depth"))
        log(f"wahub: {pending} inbox events pending; draining (at most {self.args.drain_timeout:g} s) ...")
        while left and time.monotonic() - started < self.args.drain_timeout:
            time.sleep(0.2)
            left = int(server.metric("wahub_inbox_depth"))
        seconds = time.monotonic() - started
        cpu = server.cpu_seconds() - cpu_before
        processed = pending - left
        return Pipeline(
            pending_at_end=pending,
            left_after_drain=left,
            drain_seconds=seconds,
            events_per_second=processed / seconds if seconds else 0.0,
            cpu_us_per_event=cpu / processed * 1e6 if processed else 0.0,
            cpu_us_per_request=(window_cpu + cpu) / requests * 1e6,
            replies_sent=int(server.metric("wahub_sends_total", 'outcome="sent"')),
        )


def wahub_config(port: int, home: Path, provider: dict[str, Any], *, database: str | None = None) -> str:
    """A production-like daemon: one Cloud API number, a rule and a default reply for
    every message, default pacing (80 messages/s) and workers; on SQLite in ``home``
    unless ``database`` names another."""
    entry = {"platform": "meta_cloud", "name": "main", **provider, "template_sync_hours": None}
    return (
        "wahub:\n"
        f"  http: {{host: 127.0.0.1, port: {port}}}\n"
        f"  database: {database or f'sqlite:///{home}/wahub.db'}\n"
        "  log_level: warning\n"
        f"  media: {{directory: {home}/media}}\n"
        f"providers:\n  - {json.dumps(entry)}\n"
        "router:\n"
        "  rules:\n"
        "    - match: {regex: 'order\\s+(\\d+)'}\n"
        '      reply: "Order {1} is on its way, {name}."\n'
        '  default_reply: "Thanks, {name}! A colleague will answer you here soon."\n'
    )


def _env(**extra: str) -> dict[str, str]:
    """This environment with this checkout on PYTHONPATH (an uninstalled tree still runs)."""
    path = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(REPO_ROOT)]))
    return {**os.environ, "PYTHONPATH": path, **extra}


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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description="Webhook ingest benchmark.")
    parser.add_argument("--connections", "-c", type=int, default=64, help="concurrent connections (64)")
    parser.add_argument("--duration", "-d", type=int, default=10, help="measured seconds per side and round (10)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds per side and round (2)")
    parser.add_argument("--rounds", "-r", type=int, default=3, help="rounds; the table shows medians (3)")
    parser.add_argument(
        "--quick", action="store_true", help="a check that it runs: 1 round of 2 s, 1 s warm-up, drain 10 s at most"
    )
    parser.add_argument("--threads", "-t", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--max-rate", type=int, default=10000, help="req/s the pre-signed requests last for (10000)")
    parser.add_argument("--drain-timeout", type=float, default=60, help="seconds to wait for the inbox to empty (60)")
    parser.add_argument("--only", choices=list(SIDES), help="run one side only")
    parser.add_argument("--loadgen", choices=("wrk", "python"), help="load generator (wrk when installed)")
    add_daemon_options(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 2, 1
        args.drain_timeout = min(args.drain_timeout, 10)
    numbers = (args.duration, args.threads, args.max_rate, args.rounds)
    if args.connections < args.threads or min(numbers) < 1 or args.warmup < 0:
        parser.error("need duration, threads, max-rate, rounds >= 1, warmup >= 0 and connections >= threads")
    args.sides = [args.only] if args.only else list(SIDES)
    if args.loadgen is None:
        args.loadgen = "wrk" if wrk_path() else "python"
    if args.loadgen == "python":
        log(
            "warning: load from the Python generator (wrk is not installed or not chosen): "
            "the numbers are client-bound, not the servers' limits"
        )
    return args


def run_rounds(bench: Bench, args: argparse.Namespace, errors: list[str]) -> dict[str, list[SideResult]]:
    """Baseline then wahub in each round, each with a fresh process (and database)."""
    results: dict[str, list[SideResult]] = {side: [] for side in args.sides}
    for number in range(1, args.rounds + 1):
        log(f"round {number} of {args.rounds}")
        for side in args.sides:
            try:
                if side == "baseline":
                    results[side].append(bench.run_baseline())
                else:
                    results[side].append(bench.run_wahub(number))
            except (ServerError, LoadError) as exc:
                errors.append(f"{SIDES[side]}, round {number}: {exc}")
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cpus = plan_cpus()
    args.cpu_note = describe_cpus(cpus)
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="wahub-bench-") as work:
        bench = Bench(args, Path(work), cpus)
        bench.prepare()
        try:
            if "wahub" in args.sides:
                bench.start_graph()
            results = run_rounds(bench, args, errors)
        except ServerError as exc:
            errors.append(f"fake Graph API: {exc}")
            results = {}
        finally:
            bench.stop_graph(errors)
        facts = report(args, results, errors)
    if args.json:
        args.json.write_text(json.dumps(facts, indent=2) + "\n")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
