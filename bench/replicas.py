"""Ingest on PostgreSQL with one, two and three daemons: what each added daemon adds.

    python -m bench.replicas [--daemons 1,2,3] [--duration 10] [--database-url URL] [--json out.json]

Each step starts that many ``wahub run`` daemons on one fresh PostgreSQL database (the
same config, each on its own port), gives each its own wrk with its own pre-signed
Meta Cloud API webhooks (the ingest benchmark's bodies, every id unique; the
connections split between them, as a round-robin proxy would), and measures
the requests per second they answer together, their CPU and PostgreSQL's CPU per
request, then how fast they drain together what the load left in the inbox. The
baseline is one daemon: each line shows its throughput as a ratio of it.
Nothing is pinned: the daemons, PostgreSQL and wrk share the machine's CPUs, so
what a daemon adds is bounded by the cores there are (the report says how many).
Without PostgreSQL it says so and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]

from bench.graph import READY_MARKER
from bench.ingest import WEBHOOK_PATH, _env, log, wahub_config
from bench.loadgen import LoadResult, run_wrk, wrk_path
from bench.payloads import CloudBodies, write_request_files
from bench.server import ServerError, ServerProcess, free_port

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Step:
    """The numbers of one step: ``daemons`` daemons on one database."""

    daemons: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    wahub_cpu_us_per_request: float
    postgres_cpu_us_per_request: float
    non_2xx: int
    socket_errors: int
    #: Requests sent again because a wrk ran out (the daemons dedupe them: raise --max-rate).
    repeats: int
    pending_at_end: int
    left_after_drain: int
    drain_events_per_second: float


def postgres_cpu_seconds() -> float:
    """User plus system CPU of every PostgreSQL server process on this machine (0 if none is readable)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if "(postgres)" not in text[: text.find(")") + 1]:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        total += (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    return total


async def _admin(url: str, statement: str) -> None:
    connection = await asyncpg.connect(url, timeout=5)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


class Replicas:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.secret = secrets.token_hex(24)
        self.graph: ServerProcess | None = None
        self.graph_entry: dict[str, object] = {}

    def prepare(self) -> None:
        """Pre-signed requests for each daemon's wrk, in files of their own (no id twice)."""
        bodies = CloudBodies()
        for step in self.args.daemons:
            for index in range(step):
                for phase, seconds in (("warmup", self.args.warmup), ("run", self.args.duration)):
                    count = max(self.args.max_rate * seconds // step, 1)
                    write_request_files(self.work / "requests", f"{phase}{step}x{index}", count, 1, self.secret, bodies)

    def start_graph(self) -> None:
        self.graph = ServerProcess("graph", [sys.executable, "-m", "bench.graph"], 0, self.work, env=_env())
        self.graph_entry = json.loads(self.graph.wait_line(READY_MARKER, self.args.startup_timeout))

    def step(self, count: int) -> Step:
        database = f"wahub_bench_{secrets.token_hex(4)}"
        url = self.args.database_url.rsplit("/", 1)[0] + f"/{database}"
        asyncio.run(_admin(self.args.database_url, f'CREATE DATABASE "{database}"'))
        daemons: list[ServerProcess] = []
        try:
            for index in range(count):
                home = self.work / f"step{count}-daemon{index}"
                home.mkdir()
                port = free_port()
                config = home / "config.yaml"
                entry = {**self.graph_entry, "app_secret": self.secret}
                config.write_text(wahub_config(port, home, entry, database=url))
                command = [self.args.python, "-m", "wahub", "run", "-c", str(config)]
                daemons.append(ServerProcess(f"wahub-{count}-{index}", command, port, self.work, env=_env(), cwd=home))
            for daemon in daemons:
                daemon.wait_healthy(self.args.startup_timeout)
            return self._measure(count, daemons)
        finally:
            for daemon in daemons:
                daemon.stop()
            asyncio.run(_admin(self.args.database_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))

    def _load(self, count: int, daemons: list[ServerProcess], phase: str, seconds: int) -> list[LoadResult]:
        connections = max(1, self.args.connections // count)
        with ThreadPoolExecutor(count) as pool:
            runs = [
                pool.submit(
                    run_wrk,
                    daemon.url(WEBHOOK_PATH),
                    self.work / "requests",
                    f"{phase}{count}x{index}",
                    1,
                    connections,
                    seconds,
                )
                for index, daemon in enumerate(daemons)
            ]
            return [run.result() for run in runs]

    def _measure(self, count: int, daemons: list[ServerProcess]) -> Step:
        if self.args.warmup:
            log(f"{count} daemon(s): warming up for {self.args.warmup} s ...")
            self._load(count, daemons, "warmup", self.args.warmup)
        log(f"{count} daemon(s): measuring for {self.args.duration} s ...")
        wahub_before = sum(daemon.cpu_seconds() for daemon in daemons)
        postgres_before = postgres_cpu_seconds()
        loads = self._load(count, daemons, "run", self.args.duration)
        wahub_cpu = sum(daemon.cpu_seconds() for daemon in daemons) - wahub_before
        postgres_cpu = postgres_cpu_seconds() - postgres_before
        requests = sum(load.requests for load in loads)
        if requests == 0:
            raise ServerError(f"{count} daemon(s) answered no request in {self.args.duration} s")
        pending = left = int(daemons[0].metric("wahub_inbox_depth"))
        log(f"{count} daemon(s): {pending} inbox events pending; draining (at most {self.args.drain_timeout:g} s) ...")
        started = time.monotonic()
        while left and time.monotonic() - started < self.args.drain_timeout:
            time.sleep(0.2)
            left = int(daemons[0].metric("wahub_inbox_depth"))
        drained = time.monotonic() - started
        return Step(
            daemons=count,
            requests_per_second=sum(load.requests_per_second for load in loads),
            # Each wrk's own percentiles; the slowest one stands for all.
            p50_ms=max(load.p50_ms for load in loads),
            p99_ms=max(load.p99_ms for load in loads),
            wahub_cpu_us_per_request=wahub_cpu / requests * 1e6,
            postgres_cpu_us_per_request=postgres_cpu / requests * 1e6,
            non_2xx=sum(load.non_2xx for load in loads),
            socket_errors=sum(load.socket_errors for load in loads),
            repeats=sum(load.repeats for load in loads),
            pending_at_end=pending,
            left_after_drain=left,
            drain_events_per_second=(pending - left) / drained if drained else 0.0,
        )


def print_report(steps: list[Step], args: argparse.Namespace) -> None:
    print(
        f"\nPostgreSQL ingest with several daemons: POST {WEBHOOK_PATH} (Cloud API, 1 message : 3 statuses), "
        f"{args.connections} connections split between the daemons, {args.duration} s per step, "
        f"nothing pinned, {os.cpu_count()} CPUs shared by the daemons, PostgreSQL and wrk"
    )
    header = f"{'daemons':>7} {'req/s':>8} {'vs 1':>6} {'p50 ms':>7} {'p99 ms':>7} {'wahub us/req':>12}"
    header += f" {'pg us/req':>9} {'non-2xx':>7} {'drain ev/s':>10} {'left':>7}"
    print(header)
    print("-" * len(header))
    one = next((step.requests_per_second for step in steps if step.daemons == 1), None)
    for step in steps:
        ratio = f"{step.requests_per_second / one:5.2f}x" if one else "     -"
        print(
            f"{step.daemons:>7} {step.requests_per_second:>8.0f} {ratio:>6} {step.p50_ms:>7.2f} {step.p99_ms:>7.2f}"
            f" {step.wahub_cpu_us_per_request:>12.0f} {step.postgres_cpu_us_per_request:>9.0f}"
            f" {step.non_2xx + step.socket_errors:>7} {step.drain_events_per_second:>10.0f} {step.left_after_drain:>7}"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.replicas", description="PostgreSQL ingest, 1-3 daemons.")
    parser.add_argument("--daemons", default="1,2,3", help="the steps: how many daemons each (1,2,3)")
    parser.add_argument("--connections", "-c", type=int, default=64, help="connections, split between daemons (64)")
    parser.add_argument("--duration", "-d", type=int, default=10, help="measured seconds per step (10)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds per step (2)")
    parser.add_argument("--max-rate", type=int, default=15000, help="req/s the pre-signed requests last for (15000)")
    parser.add_argument("--drain-timeout", type=float, default=30, help="seconds to wait for the inbox (30)")
    parser.add_argument(
        "--database-url", default=DEFAULT_URL, help=f"a PostgreSQL to create databases in ({DEFAULT_URL})"
    )
    parser.add_argument("--startup-timeout", type=float, default=60, help="seconds a daemon may take to start (60)")
    parser.add_argument("--python", default=sys.executable, help="the Python that runs wahub (this one)")
    parser.add_argument("--quick", action="store_true", help="1 and 2 daemons, 2 s each: does it run?")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    args.daemons = [int(n) for n in args.daemons.split(",")]
    if args.quick:
        args.daemons, args.duration, args.warmup, args.drain_timeout = [1, 2], 2, 0, 10
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = {key: getattr(args, key) for key in ("daemons", "connections", "duration", "warmup")}
    facts: dict[str, object] = {"settings": settings, "steps": [], "targets": [], "errors": []}
    skipped = None
    if wrk_path() is None:
        skipped = "wrk is not installed (apt-get install wrk)"
    else:
        try:
            asyncio.run(_admin(args.database_url, "SELECT 1"))
        except (OSError, asyncpg.PostgresError) as exc:
            skipped = f"no PostgreSQL at {args.database_url} ({exc})"
    if skipped is not None:
        print(f"bench.replicas skipped: {skipped}")
        facts["skipped"] = skipped
    else:
        steps = run(args, facts)
        print_report(steps, args)
        facts["steps"] = [asdict(step) for step in steps]
    if args.json:
        args.json.write_text(json.dumps(facts, indent=2) + "\n")
    return 1 if facts["errors"] else 0


def run(args: argparse.Namespace, facts: dict[str, object]) -> list[Step]:
    steps: list[Step] = []
    errors: list[str] = facts["errors"]  # type: ignore[assignment]
    with tempfile.TemporaryDirectory(prefix="wahub-replicas-") as work:
        bench = Replicas(args, Path(work))
        log("signing requests ...")
        bench.prepare()
        try:
            bench.start_graph()
            for count in args.daemons:
                steps.append(bench.step(count))
                if steps[-1].repeats:
                    errors.append(f"{count} daemon(s): wrk ran out of requests; run again with a higher --max-rate")
        except ServerError as exc:
            errors.append(str(exc))
        finally:
            if bench.graph is not None:
                bench.graph.stop()
    return steps


if __name__ == "__main__":
    sys.exit(main())
