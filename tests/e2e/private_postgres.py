"""A private PostgreSQL cluster for tests that stop and restart the server.

The shared test server (``WAHUB_TEST_POSTGRES_URL``) serves other tests at the
same time, so a test that restarts PostgreSQL gets a cluster of its own:
``initdb`` into a temporary directory, ``pg_ctl`` on a free port. PostgreSQL
refuses to run as root, so under root the commands run as the ``postgres``
user, in a directory that user owns.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_POSTGRES
from tests.e2e.daemon import free_port

SERVER_USER = "postgres"


def find_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: ``pg_config --bindir``, else the newest Debian-style install."""
    candidates: list[str] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(found.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
    for candidate in candidates:
        if candidate and all((Path(candidate) / tool).is_file() for tool in ("initdb", "pg_ctl")):
            return Path(candidate)
    return None


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


class PrivateCluster:
    """One PostgreSQL server in its own data directory, listening on 127.0.0.1:``port``."""

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.log = root / "server.log"
        self.port = free_port()
        self.url = f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/wahub"
        self._as_server = ["runuser", "-u", SERVER_USER, "--"] if os.geteuid() == 0 else []
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off"
        self._pg_ctl_options = ["-D", str(self.data), "-l", str(self.log), "-o", options]

    def _run(self, tool: str, *args: str, timeout: float = 60.0) -> None:
        command = [*self._as_server, str(self.bindir / tool), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            server_log = self.log.read_text() if self.log.exists() else ""
            raise AssertionError(f"{tool} {' '.join(args)} failed:\n{done.stdout}{done.stderr}\n{server_log}")

    def init(self) -> None:
        if self._as_server:
            shutil.chown(self.root, user=SERVER_USER)
        self._run("initdb", "-D", str(self.data), "-U", SERVER_USER, "--auth=trust", "-E", "UTF8", "--no-sync")
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", SERVER_USER, "wahub")

    def start(self) -> float:
        """Start the server and wait until it accepts connections; returns the time.time() it did."""
        self._run("pg_ctl", *self._pg_ctl_options, "-w", "start")
        return time.time()

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; ``fast`` ends every session at once, as a restart under load does."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> float:
        """``pg_ctl restart -m fast``; returns when (time.time()) the server accepts connections again."""
        self._run("pg_ctl", *self._pg_ctl_options, "-m", "fast", "-w", "restart")
        return time.time()


@pytest.fixture
def private_postgres() -> Iterator[PrivateCluster]:
    """A running private cluster with an empty database ``wahub``, removed afterwards."""
    bindir = find_bindir()
    missing = None
    if bindir is None:
        missing = "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql"
    elif os.geteuid() == 0 and shutil.which("runuser") is None:
        missing = "running as root needs runuser to start PostgreSQL as the postgres user"
    elif os.geteuid() == 0 and not _user_exists(SERVER_USER):
        missing = f"running as root needs a {SERVER_USER!r} user to start PostgreSQL as (PostgreSQL refuses root)"
    if missing is not None:
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL is required (WAHUB_REQUIRE_POSTGRES=1): {missing}")
        pytest.skip(missing)
    assert bindir is not None
    root = Path(tempfile.mkdtemp(prefix="wahub-pg-"))
    cluster = PrivateCluster(bindir, root)
    try:
        cluster.init()
        yield cluster
    finally:
        if (cluster.data / "postmaster.pid").exists():
            cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
