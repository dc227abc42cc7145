"""The daemon as a process in a network namespace of its own (``unshare``), where
only loopback exists: what it does there needs no other host."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from wahub.testing import wait_until

_UP_THEN_RUN = 'ip link set lo up && exec "$@"'


def can_isolate() -> bool:
    """Whether this machine lets an unprivileged user make a network namespace
    (user namespaces enabled, ``unshare``, ``nsenter`` and ``ip`` installed)."""
    if not all(shutil.which(tool) for tool in ("unshare", "nsenter", "ip")):
        return False
    probe = subprocess.run(["unshare", "-rn", "sh", "-c", _UP_THEN_RUN, "sh", "true"], capture_output=True, check=False)
    return probe.returncode == 0


@dataclass
class IsolatedDaemon:
    """``wahub run`` alone in its network namespace (or, without one, on this host)."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path
    isolated: bool

    def inside(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run in the daemon's network namespace, the only place its port is reachable."""
        if not self.isolated:
            return list(argv)
        return ["nsenter", "-t", str(self.process.pid), "-U", "-n", "--preserve-credentials", *argv]

    async def wait_healthy(self, within: float = 20.0) -> None:
        """Wait until ``/healthz`` answers 200 from inside the namespace; fail with the log otherwise."""
        probe = f"import urllib.request as u; u.urlopen('{self.url}/healthz', timeout=1)"

        async def healthy() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited with {self.process.returncode}:\n{self.log.read_text()}")
            check = await asyncio.create_subprocess_exec(
                *self.inside([sys.executable, "-c", probe]),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            return await check.wait() == 0

        await wait_until(healthy, within=within, every=0.2)

    def terminate(self, within: float = 10.0) -> int:
        self.process.terminate()
        return self.process.wait(timeout=within)


def start_isolated(config: Path, cwd: Path, port: int, *, isolate: bool) -> IsolatedDaemon:
    """Start ``python -m wahub run -c config`` in ``cwd`` on ``port``; with ``isolate``
    in a new user and network namespace whose only interface is loopback."""
    prefix = ["unshare", "-rn", "sh", "-c", _UP_THEN_RUN, "sh"] if isolate else []
    log = cwd / f"daemon-{port}-{time.monotonic_ns()}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "wahub", "run", "-c", str(config)],
            cwd=cwd,
            env={**os.environ, "WAHUB_PORT": str(port)},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return IsolatedDaemon(process, f"http://127.0.0.1:{port}", log, isolate)
