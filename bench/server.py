"""Server processes under test: start, wait for /healthz, read /proc, stop."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ServerError(RuntimeError):
    """A server under test did not start or died."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Memory:
    rss_mb: float
    hwm_mb: float


class ServerProcess:
    """One server subprocess; its output goes to files in ``log_dir``."""

    def __init__(
        self,
        name: str,
        command: list[str],
        port: int,
        log_dir: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self._stderr_path = log_dir / f"{name}.stderr"
        self._stdout_path = log_dir / f"{name}.stdout"
        with (
            open(self._stdout_path, "wb") as stdout,
            open(self._stderr_path, "wb") as stderr,
        ):
            self._process = subprocess.Popen(
                command, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, env=env, cwd=cwd
            )

    @property
    def pid(self) -> int:
        return self._process.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stderr_tail(self, lines: int = 30) -> str:
        text = self._stderr_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:]) or "(stderr is empty)"

    def _fail(self, why: str) -> ServerError:
        return ServerError(f"{self.name} {why}; last lines of its stderr:\n{self.stderr_tail()}")

    def wait_healthy(self, timeout: float) -> None:
        """Poll ``GET /healthz`` until it answers 200; raise with the stderr tail if not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise self._fail(f"exited with code {self._process.returncode} before /healthz answered")
            try:
                with urllib.request.urlopen(self.url("/healthz"), timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise self._fail(f"did not answer GET /healthz with 200 within {timeout:.0f} s")

    def wait_line(self, marker: str, timeout: float, after: int = 0) -> str:
        """The rest of the first stdout line (past the ``after``-th) starting with ``marker``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [line for line in self._stdout_path.read_text().splitlines() if line.startswith(marker)]
            if len(found) > after:
                return found[after][len(marker) :]
            if self._process.poll() is not None:
                raise self._fail(f"exited with code {self._process.returncode} before printing {marker.strip()}")
            time.sleep(0.05)
        raise self._fail(f"printed no {marker.strip()} line within {timeout:.0f} s")

    def metric(self, name: str, having: str = "") -> float:
        """The sum of the series ``name`` on ``GET /metrics`` whose labels include ``having``
        (e.g. ``outcome="sent"``); 0 when there is none."""
        self.check_alive()
        with urllib.request.urlopen(self.url("/metrics"), timeout=5) as response:
            text = response.read().decode()
        total = 0.0
        for line in text.splitlines():
            series, _, value = line.rpartition(" ")
            if (series == name or series.startswith(name + "{")) and having in series:
                total += float(value)
        return total

    def cpu_seconds(self) -> float:
        """User plus system CPU time the process has used so far."""
        self.check_alive()
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        # The command name may hold spaces; the fields after it never do.
        fields = stat[stat.rindex(")") + 2 :].split()
        utime, stime = int(fields[11]), int(fields[12])
        return (utime + stime) / _CLOCK_TICKS

    def memory(self) -> Memory:
        self.check_alive()
        values: dict[str, float] = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
        return Memory(rss_mb=values["VmRSS"], hwm_mb=values["VmHWM"])

    def check_alive(self) -> None:
        if self._process.poll() is not None:
            raise self._fail(f"died with code {self._process.returncode} during the run")

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM, as a service manager would, then SIGKILL if it does not exit in time."""
        if self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


@dataclass(frozen=True)
class CpuPlan:
    """Which CPUs the server under test gets, and which the load generator and fakes get."""

    server: int
    load: tuple[int, ...]

    def describe(self) -> str:
        return f"server pinned to CPU {self.server}, load generator and fake Graph API to {_cpus(self.load)}"


def plan_cpus() -> CpuPlan | None:
    """Give the server the first usable CPU and the rest to this process (and so to the
    load generator and the fake Graph API it starts); None when that is not possible:
    fewer than two CPUs, or no ``taskset``."""
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2 or shutil.which("taskset") is None:
        return None
    plan = CpuPlan(server=usable[0], load=tuple(usable[1:]))
    os.sched_setaffinity(0, plan.load)
    return plan


def pinned(command: list[str], plan: CpuPlan | None) -> list[str]:
    """``command`` run on the server's CPU (``taskset`` execs it, so the pid is the same)."""
    return command if plan is None else ["taskset", "-c", str(plan.server), *command]


def _cpus(cpus: tuple[int, ...]) -> str:
    return ",".join(map(str, cpus))


def add_daemon_options(parser: argparse.ArgumentParser) -> None:
    """The options every benchmark that starts the daemon takes."""
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs `-m wahub run`")
    parser.add_argument("--startup-timeout", type=float, default=60, help="seconds to wait for /healthz (60)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON to PATH")


def describe_cpus(plan: CpuPlan | None) -> str:
    """How the server and the load share the CPUs, for the report's heading."""
    return plan.describe() if plan else "not pinned: fewer than two CPUs or no taskset; server and load share"
