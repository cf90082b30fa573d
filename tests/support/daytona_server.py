"""Starts and stops a `daytona server` for tests and examples.

Used by the Python compatibility suite's fixtures, and as a command that runs another command
against a fresh server:

    python3 tests/support/daytona_server.py -- python3 examples/humaneval/run.py

Environment:
    DAYTONA_BIN           path of the `daytona` binary (required)
    DAYTONA_DAEMON_BIN    path of the static `daytona-daemon` binary (required)
    DAYTONA_IMAGE_CACHE   image cache directory shared between runs (default /var/cache/daytona/images)
    DAYTONA_TLS_DIR       directory of the object storage's CA, shared between runs so that one CA
                          is trusted (default: the server's own, under its data directory)
"""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

SERVER_START_TIMEOUT = 600  # seconds; the first start builds the default snapshot


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """A running `daytona server` and the credentials to reach it."""

    def __init__(self, extra_args: list[str] | None = None, binary: str | None = None):
        self.extra_args = list(extra_args or [])
        self.binary = binary or os.environ["DAYTONA_BIN"]
        self.daemon_binary = os.environ["DAYTONA_DAEMON_BIN"]
        self.image_cache = os.environ.get("DAYTONA_IMAGE_CACHE", "/var/cache/daytona/images")
        self.port = free_port()
        self.object_storage_port = free_port()
        self.ssh_port = free_port()
        self.preview_port = free_port()
        self.tls_dir = os.environ.get("DAYTONA_TLS_DIR")
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_url = f"{self.url}/api"
        self.api_key = "dtn_test_" + secrets.token_hex(16)
        self.data_dir = tempfile.mkdtemp(prefix="dtn-", dir="/tmp")
        self.log_path = os.path.join(self.data_dir, "server.out")
        self.process = None

    def start(self, env: dict[str, str] | None = None):
        """Starts the server; `env` adds variables to its environment for this start only."""
        env = dict(os.environ, **(env or {}), DAYTONA_ADMIN_API_KEY=self.api_key, DAYTONA_LOG="info")
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [
                self.binary, "server",
                "--data-dir", self.data_dir,
                "--listen", f"127.0.0.1:{self.port}",
                "--image-cache", self.image_cache,
                "--daemon-binary", self.daemon_binary,
                "--object-storage-listen", f"127.0.0.1:{self.object_storage_port}",
                "--ssh-listen", f"127.0.0.1:{self.ssh_port}",
                "--preview-listen", f"127.0.0.1:{self.preview_port}",
                *(["--tls-dir", self.tls_dir] if self.tls_dir else []),
                # Test servers never give sandboxes real egress: a test that wants networking
                # passes its own --network-uplink, into namespaces it created.
                *([] if "--network-uplink" in self.extra_args else ["--network-uplink", "off"]),
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daytona server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"daytona server did not become healthy in {SERVER_START_TIMEOUT} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, "rb") as log:
                return b"\n".join(log.read().splitlines()[-lines:]).decode(errors="replace")
        except OSError:
            return "(no log)"

    def request(self, method: str, path: str, body=None, headers=None, key: str | None = "default"):
        """Sends a raw request to the API; returns (status, parsed JSON or text)."""
        url = path if path.startswith("http") else f"{self.api_url}{path}"
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if key == "default":
            key = self.api_key
        if key is not None:
            request.add_header("Authorization", f"Bearer {key}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, payload = error.code, error.read()
        try:
            return status, json.loads(payload)
        except ValueError:
            return status, payload.decode(errors="replace")

    def delete_all_sandboxes(self):
        status, page = self.request("GET", "/sandbox?limit=1000")
        if status != 200:
            return
        for item in page["items"]:
            self.request("DELETE", f"/sandbox/{item['id']}")

    def stop(self):
        if self.process is None:
            return
        self.delete_all_sandboxes()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def remove_data(self):
        shutil.rmtree(self.data_dir, ignore_errors=True)




def main(argv: list[str]) -> int:
    """Runs argv[1:] (after `--`) with DAYTONA_API_URL and DAYTONA_API_KEY of a fresh server."""
    if "--" in argv:
        argv = argv[argv.index("--") + 1:]
    if not argv:
        print("usage: daytona_server.py -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    server = Server()
    try:
        server.start()
        env = dict(os.environ, DAYTONA_API_URL=server.api_url, DAYTONA_API_KEY=server.api_key)
        return subprocess.call(argv, env=env)
    except RuntimeError as error:
        print(error, file=sys.stderr)
        return 1
    finally:
        server.stop()
        server.remove_data()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
