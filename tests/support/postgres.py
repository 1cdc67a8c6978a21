"""Starts a throwaway PostgreSQL cluster for the test session from Debian's server binaries.

PostgreSQL refuses to run as root, and CI runs as root: then initdb and pg_ctl run as the
`postgres` user on a temporary folder that user owns, with the socket in that folder and a free
TCP port on 127.0.0.1.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

DB_USER = "tidings"


def _binary(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    if found:
        return found[0]
    on_path = shutil.which(name)
    if on_path:
        return on_path
    raise RuntimeError(
        f"PostgreSQL's {name} was not found: run scripts/ensure-test-services (make test does)"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresCluster:
    root: Path
    port: int
    as_user: list[str]

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{DB_USER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, capture_output=True, text=True)

    @classmethod
    def start(cls) -> PostgresCluster:
        root = Path(tempfile.mkdtemp(prefix="tidings-pg-"))
        as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
            as_user = ["runuser", "-u", "postgres", "--"]
        cluster = cls(root=root, port=free_port(), as_user=as_user)
        cluster._run(
            _binary("initdb"),
            "-D",
            str(cluster.data_dir),
            "-U",
            DB_USER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        cluster.start_server()
        return cluster

    def start_server(self) -> None:
        """Starts the server on the cluster's data folder and port (again, after stop_server)."""
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        self._run(
            _binary("pg_ctl"),
            "-D",
            str(self.data_dir),
            "-o",
            options,
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop_server(self) -> None:
        """Stops the server, keeping its data: an outage, ended by start_server."""
        self._run(_binary("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user={DB_USER} dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run(_binary("pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
