"""Load generators: wrk with bench/ingest.lua, or a slower aiohttp fallback."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.payloads import SIGNATURE_HEADER, read_request_files

LUA_SCRIPT = Path(__file__).with_name("ingest.lua")
RESULT_MARKER = "WAHUB_BENCH_RESULT "


class LoadError(RuntimeError):
    """The load generator failed or printed no result."""


@dataclass
class LoadResult:
    """What one timed load run saw from the client side."""

    requests: int
    seconds: float
    ok: int
    non_2xx: int
    socket_errors: int
    repeats: int
    p50_ms: float
    p99_ms: float

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def wrk_path() -> str | None:
    return shutil.which("wrk")


def run_wrk(url: str, data_dir: Path, phase: str, threads: int, connections: int, seconds: int) -> LoadResult:
    """Run wrk for ``seconds`` against ``url`` with the ``phase`` request files."""
    wrk = wrk_path()
    if wrk is None:
        raise LoadError("wrk is not installed")
    command = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "-s",
        str(LUA_SCRIPT),
        url,
        "--",
        str(data_dir),
        phase,
        SIGNATURE_HEADER,
    ]
    try:
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=seconds + 60)
    except subprocess.TimeoutExpired as exc:
        raise LoadError(f"wrk did not finish within {seconds + 60} s") from exc
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            raw = json.loads(line[len(RESULT_MARKER) :])
            return LoadResult(
                requests=raw["requests"],
                seconds=raw["duration_us"] / 1e6,
                ok=raw["ok"],
                non_2xx=raw["non_2xx"],
                socket_errors=raw["socket_errors"],
                repeats=raw["repeats"],
                p50_ms=raw["p50_us"] / 1000,
                p99_ms=raw["p99_us"] / 1000,
            )
    raise LoadError(
        f"wrk exited with {done.returncode} and printed no result\n"
        f"stdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-2000:]}"
    )


def run_python(url: str, paths: list[Path], connections: int, seconds: int) -> LoadResult:
    """Send the requests of ``paths`` from ``connections`` aiohttp workers for ``seconds``.

    This runs in the benchmark's own process and is client-bound: use it only without wrk.
    """
    return asyncio.run(_python_load(url, read_request_files(paths), connections, seconds))


async def _python_load(url: str, requests: list[tuple[str, bytes]], connections: int, seconds: int) -> LoadResult:
    latencies: list[float] = []
    counts = {"ok": 0, "non_2xx": 0, "socket_errors": 0, "repeats": 0}
    cursor = iter(range(1 << 62))
    deadline = time.perf_counter() + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        while time.perf_counter() < deadline:
            index = next(cursor)
            counts["repeats"] += index >= len(requests)
            signature, body = requests[index % len(requests)]
            headers = {SIGNATURE_HEADER: signature, "Content-Type": "application/json"}
            started = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    counts["ok" if 200 <= response.status < 300 else "non_2xx"] += 1
            except (TimeoutError, aiohttp.ClientError):
                counts["socket_errors"] += 1
                continue
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()

    def percentile(share: float) -> float:
        return latencies[min(len(latencies) - 1, int(share * len(latencies)))] * 1000 if latencies else 0.0

    return LoadResult(
        requests=len(latencies),
        seconds=elapsed,
        p50_ms=percentile(0.50),
        p99_ms=percentile(0.99),
        ok=counts["ok"],
        non_2xx=counts["non_2xx"],
        socket_errors=counts["socket_errors"],
        repeats=counts["repeats"],
    )
