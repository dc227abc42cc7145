"""Run the daemon as a real process, the way a user does."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def wait_healthy(self, within: float = 10.0) -> float:
        """Seconds until /healthz answered 200; fails with the daemon's log otherwise."""
        started = time.monotonic()
        while time.monotonic() - started < within:
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited with {self.process.returncode}:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return time.monotonic() - started
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"/healthz not 200 within {within} s:\n{self.log.read_text()}")

    def terminate(self, within: float = 10.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=within)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


def start_daemon(
    config: Path, cwd: Path, port: int, *, pythonpath: Path | None = None, plugins: tuple[str, ...] = ()
) -> Daemon:
    env = {**os.environ, "WAHUB_PORT": str(port)}
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    log = cwd / f"daemon-{port}-{time.monotonic_ns()}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "wahub", "run", "-c", str(config), *(f"--plugin={p}" for p in plugins)],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return Daemon(process, f"http://127.0.0.1:{port}", log)
