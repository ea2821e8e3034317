"""A throwaway PostgreSQL server on 127.0.0.1 from Debian's packages, for tests and benchmarks."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def postgres_bin() -> Path | None:
    """The folder of the newest installed server's programs, or ``None``."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@contextmanager
def postgres_server(max_connections: int = 100) -> Iterator[str]:
    """Start a server with a database ``sweep``; yield its URL; stop it and remove its files.

    Raises:
        FileNotFoundError: No server is installed (``apt-get install postgresql``).
    """
    bindir = postgres_bin()
    if bindir is None:
        raise FileNotFoundError("PostgreSQL server not installed (apt-get install postgresql)")
    # initdb refuses to run as root: run the server as the package's postgres user then, in a
    # folder it can reach (pytest's own temporary folders are private to root)
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    top = Path(tempfile.mkdtemp(prefix="sweep-pg-"))
    top.chmod(0o755)
    data = top / "data"
    data.mkdir()
    if as_user:
        shutil.chown(data, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def run(*cmd: str) -> None:
        subprocess.run([*as_user, *cmd], check=True, capture_output=True)

    run(str(bindir / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres")
    options = f"-h 127.0.0.1 -p {port} -k {data} -c max_connections={max_connections}"
    run(
        str(bindir / "pg_ctl"),
        "-D",
        str(data),
        "-o",
        options,
        "-l",
        str(data / "log"),
        "-w",
        "start",
    )
    try:
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "sweep")
        yield f"postgresql://postgres@127.0.0.1:{port}/sweep"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(top, ignore_errors=True)
