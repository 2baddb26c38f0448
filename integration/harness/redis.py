"""Start a throwaway Redis (Debian's `redis-server`) for end-to-end tests.

    redis = start_redis(tmp_path)       # listens on a Unix socket only: no port to race for
    redis.client().call("PING")         # -> "PONG"
    redis.stop()

Persistence is off; everything lives in memory and goes away with the process.
`.ci/run` installs the `redis-server` package.
"""

from __future__ import annotations

import atexit
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any

_LIVE: "weakref.WeakSet[Redis]" = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    for redis in list(_LIVE):
        redis.stop()


class RespError(RuntimeError):
    """An error reply (`-ERR ...`) from Redis."""


class RespClient:
    """A minimal RESP2 client over one connection; thread-safe (one command at a time)."""

    def __init__(self, socket_path: str | Path, timeout_s: float = 5.0) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout_s)
        self._sock.connect(str(socket_path))
        self._file = self._sock.makefile("rb")
        self._lock = threading.Lock()

    def close(self) -> None:
        try:
            self._file.close()
        finally:
            self._sock.close()

    def call(self, *args: Any) -> Any:
        """One command, e.g. ``call("INCRBY", key, 5)``; returns its decoded reply."""
        return self.pipeline([args])[0]

    def pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Several commands in one round trip; their replies in order."""
        out = bytearray()
        for command in commands:
            out += b"*%d\r\n" % len(command)
            for arg in command:
                data = arg if isinstance(arg, bytes) else str(arg).encode()
                out += b"$%d\r\n%s\r\n" % (len(data), data)
        with self._lock:
            self._sock.sendall(bytes(out))
            return [self._read() for _ in commands]

    def _read(self) -> Any:
        line = self._file.readline()
        if not line:
            raise ConnectionError("redis closed the connection")
        kind, rest = line[:1], line[1:].rstrip(b"\r\n")
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self._file.read(n + 2)
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise ConnectionError(f"unexpected RESP reply {line!r}")


class Redis:
    def __init__(self, workdir: str | Path | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed (apt-get install -y redis-server; .ci/run does)")
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="aigate-redis-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.socket_path = self.workdir / "redis.sock"
        self.log_path = self.workdir / "redis.log"
        self.args = [
            binary,
            "--port", "0",  # no TCP at all
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--logfile", str(self.log_path),
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> "Redis":
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        _LIVE.add(self)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                client = RespClient(self.socket_path, timeout_s=1)
                try:
                    if client.call("PING") == "PONG":
                        return self
                finally:
                    client.close()
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start: {self.log_tail()}")
            time.sleep(0.02)

    def client(self) -> RespClient:
        return RespClient(self.socket_path)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        _LIVE.discard(self)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def start_redis(workdir: str | Path | None = None) -> Redis:
    return Redis(workdir).start()
