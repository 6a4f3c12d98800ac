"""Running real switchboard nodes (and a TCP proxy that can cut connections)
for the tests."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[3]


def binary() -> Optional[str]:
    """The switchboard binary to test against, or None when it is missing."""
    path = os.environ.get("SWITCHBOARD_BIN") or str(REPO / "target" / "debug" / "switchboard")
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


MISSING_BINARY = (
    "switchboard binary not found (set SWITCHBOARD_BIN or build target/debug/switchboard): "
    "skipping the tests against a real server"
)


def redis_url() -> str:
    return os.environ.get("SWITCHBOARD_TEST_REDIS", "redis://127.0.0.1:6379")


def redis_reachable(url: str) -> Optional[str]:
    """None when Redis answers PING at ``url``, else why not."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    try:
        with socket.create_connection((host, port), timeout=3) as conn:
            conn.sendall(b"*1\r\n$4\r\nPING\r\n")
            answer = conn.recv(64)
    except OSError as exc:
        return f"cannot reach Redis at {url}: {exc}"
    if not answer.startswith(b"+PONG") and not answer.startswith(b"-NOAUTH"):
        return f"Redis at {url} answered {answer!r}"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwt_hs256(secret: str, claims: Dict[str, Any]) -> str:
    """A JWT signed with HS256 (RFC 7519 compact form)."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode("ascii")
    signature = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


class Node:
    """One ``switchboard serve`` process on a fixed port (kept across restarts)."""

    def __init__(self, label: str, env: Dict[str, str], workdir: str) -> None:
        bin_path = binary()
        assert bin_path is not None, MISSING_BINARY
        self.bin = bin_path
        self.label = label
        self.port = free_port()
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "RUST_LOG": os.environ.get("SWITCHBOARD_LOG", "warn"),
            "DATABASE_URL": "sqlite::memory:",
            **env,
        }
        self.log_path = os.path.join(workdir, f"{label}.log")
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 30.0) -> None:
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"--- start {self.starts} at {time.time():.3f}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [self.bin, "serve"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=os.path.dirname(self.log_path),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node {self.label} exited with {self.proc.returncode}: {self.logs()[-2000:]}")
            if await asyncio.to_thread(_healthy, self.url):
                return
            await asyncio.sleep(0.1)
        self.kill()
        raise RuntimeError(f"node {self.label} not healthy within {timeout} s: {self.logs()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL: the node dies without saying goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def logs(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""


class Proxy:
    """A TCP proxy to ``127.0.0.1:target_port`` that can cut every connection
    it carries at once (as a network failure would)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.cuts = 0
        self.accepted = 0
        #: While True, new connections are dropped at once (the node "is down").
        self.refusing = False
        self._server: Optional[asyncio.AbstractServer] = None
        self._pairs: Set[Tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: Set["asyncio.Task[None]"] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> "Proxy":
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._pairs.discard(pair)
            writer.transport.abort()
            up_writer.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()

    def cut(self) -> int:
        """Aborts every connection going through now; returns how many."""
        pairs = list(self._pairs)
        for down, up in pairs:
            down.transport.abort()
            up.transport.abort()
        self.cuts += 1
        return len(pairs)

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def temp_dir() -> str:
    return tempfile.mkdtemp(prefix="switchboard-pyc-")


def ordered_unique(items: List[str]) -> bool:
    return len(items) == len(set(items))
