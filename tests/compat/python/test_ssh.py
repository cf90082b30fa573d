"""SSH access through the official SDK and the SSH gateway, driven with Debian's OpenSSH client
(`openssh-client`): tokens, exec, stdin, an interactive terminal, scp, sftp, revocation and
the isolation between sandboxes.

The client runs with `-F /dev/null` and a private HOME, so nothing of the machine's SSH
configuration or keys is used.
"""

import fcntl
import hashlib
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import tempfile
import termios
import time
import uuid

import pytest
from daytona import DaytonaBadRequestError

pytestmark = pytest.mark.skipif(
    shutil.which("ssh") is None or shutil.which("sftp") is None,
    reason="SKIPPED: the OpenSSH client (openssh-client) is not installed",
)


@pytest.fixture(scope="module")
def client_home():
    home = tempfile.mkdtemp(prefix="dtn-ssh-home-", dir="/tmp")
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def access(sandbox):
    created = sandbox.create_ssh_access(30)
    yield created
    sandbox.revoke_ssh_access(created.token)


def client_options(server):
    return [
        "-F", "/dev/null",
        "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes",
        "-o", "LogLevel=ERROR",
        "-o", "ConnectTimeout=20",
    ]


def ssh_args(server, token, *extra):
    return ["ssh", *client_options(server), "-p", str(server.ssh_port), *extra, f"{token}@127.0.0.1"]


def client_env(home, **extra):
    env = {"HOME": home, "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    env.update(extra)
    return env


def run_ssh(server, home, token, command, stdin=b"", timeout=120):
    return subprocess.run(
        [*ssh_args(server, token), command],
        input=stdin,
        capture_output=True,
        env=client_env(home),
        timeout=timeout,
    )


def wait_until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_create_returns_token_and_command(server, sandbox, access):
    assert access.sandbox_id == sandbox.id
    assert re.fullmatch(r"[A-Za-z0-9]{32,}", access.token)
    assert access.ssh_command == f"ssh -p {server.ssh_port} {access.token}@127.0.0.1"
    lifetime = access.expires_at - access.created_at
    assert 29 * 60 <= lifetime.total_seconds() <= 31 * 60

    default = sandbox.create_ssh_access()
    try:
        assert 59 * 60 <= (default.expires_at - default.created_at).total_seconds() <= 61 * 60
        assert default.token != access.token
    finally:
        sandbox.revoke_ssh_access(default.token)


def test_create_rejects_invalid_expiry(sandbox):
    for minutes in (0, -1, 10**9):
        with pytest.raises(DaytonaBadRequestError) as raised:
            sandbox.create_ssh_access(minutes)
        assert "expiresInMinutes" in str(raised.value)


def test_validate_and_revoke(sandbox):
    created = sandbox.create_ssh_access(5)
    validation = sandbox.validate_ssh_access(created.token)
    assert validation.valid is True
    assert validation.sandbox_id == sandbox.id

    sandbox.revoke_ssh_access(created.token)
    assert sandbox.validate_ssh_access(created.token).valid is False
    assert sandbox.validate_ssh_access("not-a-token").valid is False


def test_other_organization_cannot_use_tokens(server, sandbox, access):
    name = f"org-{uuid.uuid4().hex[:8]}"
    status, org = server.request("POST", "/organizations", {"name": name, "defaultRegionId": "local"})
    assert status == 201, org
    status, key = server.request(
        "POST", "/api-keys", {"name": "member", "permissions": ["write:sandboxes", "delete:sandboxes"]},
        headers={"X-Daytona-Organization-ID": org["id"]},
    )
    assert status == 201, key
    other = key["value"]

    status, body = server.request("DELETE", f"/sandbox/{sandbox.id}/ssh-access?token={access.token}", key=other)
    assert status == 404, body
    status, body = server.request("POST", f"/sandbox/{sandbox.id}/ssh-access", key=other)
    assert status == 404, body
    status, body = server.request("GET", f"/sandbox/ssh-access/validate?token={access.token}", key=other)
    assert status == 200, body
    assert body == {"valid": False, "sandboxId": ""}
    # The owner's token still works.
    assert sandbox.validate_ssh_access(access.token).valid is True


def test_exec_reports_exit_status_and_stderr(server, sandbox, access, client_home):
    result = run_ssh(server, client_home, access.token, "echo out; echo err >&2; exit 3")
    assert result.returncode == 3, result
    assert result.stdout == b"out\n"
    assert b"err\n" in result.stderr

    result = run_ssh(server, client_home, access.token, "id -un; pwd; test -t 0 || echo no-tty")
    assert result.returncode == 0, result
    user, cwd, tty = result.stdout.decode().splitlines()
    expected_user = sandbox.process.exec("id -un").result.strip()
    assert user == expected_user
    assert cwd == sandbox.get_work_dir()
    assert tty == "no-tty"


def test_stdin_is_binary_safe(server, access, client_home):
    data = os.urandom(3 * 1024 * 1024) + bytes(range(256))
    result = run_ssh(server, client_home, access.token, "cat", stdin=data)
    assert result.returncode == 0, result.stderr
    assert result.stdout == data

    result = run_ssh(server, client_home, access.token, "sha256sum | cut -d' ' -f1", stdin=data)
    assert result.stdout.decode().strip() == hashlib.sha256(data).hexdigest()


def set_size(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class Terminal:
    """An `ssh -tt` session on a local pseudo-terminal, as a person would run it."""

    def __init__(self, args, env):
        self.master, slave = pty.openpty()
        set_size(slave, 30, 100)
        self.process = subprocess.Popen(
            args, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
        )
        os.close(slave)
        self.output = b""

    def send(self, text):
        os.write(self.master, text.encode())

    def expect(self, pattern, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern.encode(), self.output)
            if match:
                self.output = self.output[match.end():]
                return match
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{pattern!r} not seen within {timeout} s; output: {self.output[-2000:]!r}"
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:
                    chunk = b""
                assert chunk, f"the terminal closed before {pattern!r}; output: {self.output[-2000:]!r}"
                self.output += chunk

    def resize(self, rows, cols):
        set_size(self.master, rows, cols)
        # ssh reads the new size when SIGWINCH arrives.
        self.process.send_signal(signal.SIGWINCH)

    def close(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        os.close(self.master)


def test_interactive_terminal(server, access, client_home):
    terminal = Terminal(ssh_args(server, access.token, "-tt"), client_env(client_home, TERM="xterm-256color"))
    try:
        terminal.send("tty; echo TERM=$TERM; stty size; echo END-ONE\n")
        match = terminal.expect(r"(/dev/pts/\d+)\s+TERM=(\S+)\s+(\d+) (\d+)\s+END-ONE")
        assert match.group(2) == b"xterm-256color"
        assert (match.group(3), match.group(4)) == (b"30", b"100")

        terminal.resize(50, 132)
        # The new size travels as a window-change request; poll until the shell sees it.
        deadline = time.monotonic() + 20
        while True:
            terminal.send("echo SIZE=$(stty size)=\n")
            size = terminal.expect(r"SIZE=(\d+ \d+)=").group(1)
            if size == b"50 132" or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert size == b"50 132"

        terminal.send("exit 7\n")
        assert terminal.process.wait(timeout=30) == 7
    finally:
        terminal.close()


def test_scp_round_trip(server, access, client_home):
    work = tempfile.mkdtemp(prefix="dtn-scp-", dir="/tmp")
    try:
        source = os.path.join(work, "up.bin")
        data = os.urandom(2 * 1024 * 1024 + 17)
        with open(source, "wb") as file:
            file.write(data)
        options = [*client_options(server), "-P", str(server.ssh_port)]
        target = f"{access.token}@127.0.0.1"

        # Modern scp uses the SFTP subsystem.
        up = subprocess.run(["scp", *options, source, f"{target}:/tmp/scp-up.bin"],
                            capture_output=True, env=client_env(client_home), timeout=120)
        assert up.returncode == 0, up.stderr
        check = run_ssh(server, client_home, access.token, "sha256sum /tmp/scp-up.bin | cut -d' ' -f1")
        assert check.stdout.decode().strip() == hashlib.sha256(data).hexdigest()

        back = os.path.join(work, "down.bin")
        down = subprocess.run(["scp", *options, f"{target}:/tmp/scp-up.bin", back],
                              capture_output=True, env=client_env(client_home), timeout=120)
        assert down.returncode == 0, down.stderr
        with open(back, "rb") as file:
            assert file.read() == data

        # `scp -O` runs `scp -t` in the sandbox, so it needs scp there (the default snapshot
        # has it).
        if run_ssh(server, client_home, access.token, "command -v scp").returncode != 0:
            print("SKIPPED: scp -O: the sandbox image has no scp")
            return
        legacy = subprocess.run(["scp", "-O", *options, source, f"{target}:/tmp/scp-legacy.bin"],
                                capture_output=True, env=client_env(client_home), timeout=120)
        assert legacy.returncode == 0, legacy.stderr
        check = run_ssh(server, client_home, access.token, "sha256sum /tmp/scp-legacy.bin | cut -d' ' -f1")
        assert check.stdout.decode().strip() == hashlib.sha256(data).hexdigest()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_sftp_batch(server, access, client_home):
    work = tempfile.mkdtemp(prefix="dtn-sftp-", dir="/tmp")
    try:
        source = os.path.join(work, "put.bin")
        data = os.urandom(512 * 1024)
        with open(source, "wb") as file:
            file.write(data)
        fetched = os.path.join(work, "got.bin")
        batch = os.path.join(work, "batch")
        with open(batch, "w") as file:
            file.write(
                "mkdir /tmp/sftp-dir\n"
                f"put {source} /tmp/sftp-dir/file.bin\n"
                "ls -l /tmp/sftp-dir\n"
                f"get /tmp/sftp-dir/file.bin {fetched}\n"
                "rm /tmp/sftp-dir/file.bin\n"
                "rmdir /tmp/sftp-dir\n"
            )
        result = subprocess.run(
            ["sftp", *client_options(server), "-P", str(server.ssh_port), "-b", batch,
             f"{access.token}@127.0.0.1"],
            capture_output=True, env=client_env(client_home), timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert b"file.bin" in result.stdout
        with open(fetched, "rb") as file:
            assert file.read() == data
        gone = run_ssh(server, client_home, access.token, "test -e /tmp/sftp-dir && echo present || echo gone")
        assert gone.stdout == b"gone\n"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_wrong_token_is_rejected(server, client_home):
    for token in ("wrong", "A" * 43):
        result = run_ssh(server, client_home, token, "true", timeout=60)
        assert result.returncode == 255
        assert b"Permission denied" in result.stderr, result.stderr


def test_revoke_ends_live_session(server, sandbox, client_home):
    created = sandbox.create_ssh_access(5)
    session = subprocess.Popen(
        [*ssh_args(server, created.token), "echo started; exec sleep 600"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=client_env(client_home),
    )
    try:
        assert session.stdout.readline() == b"started\n"
        sandbox.revoke_ssh_access(created.token)
        wait_until(lambda: session.poll() is not None, 30, "the revoked session to end")
        assert session.returncode != 0
        # The command went with the session.
        wait_until(
            lambda: "sleep 600" not in sandbox.process.exec("ps -eo args").result, 30,
            "the session's command to be killed",
        )
        result = run_ssh(server, client_home, created.token, "true", timeout=60)
        assert result.returncode == 255
    finally:
        if session.poll() is None:
            session.kill()
        session.wait(timeout=30)
        session.stdout.close()
        session.stderr.close()


def test_token_reaches_only_its_sandbox(server, daytona, sandbox, access, client_home):
    other = daytona.create()
    try:
        sandbox.process.exec("echo first > /tmp/which")
        other.process.exec("echo second > /tmp/which")
        other_access = other.create_ssh_access(5)

        assert run_ssh(server, client_home, access.token, "cat /tmp/which").stdout == b"first\n"
        assert run_ssh(server, client_home, other_access.token, "cat /tmp/which").stdout == b"second\n"

        # Revoking through another sandbox leaves the token alone.
        other.revoke_ssh_access(access.token)
        assert sandbox.validate_ssh_access(access.token).valid is True

        # A stopped sandbox gets a clear message and a failed exit status.
        other.stop()
        stopped = run_ssh(server, client_home, other_access.token, "true", timeout=60)
        assert stopped.returncode != 0
        assert b"start it first" in stopped.stderr, stopped.stderr
    finally:
        daytona.delete(other)


def test_silent_connection_closed_at_login_deadline(server):
    """A client that connects and never logs in is closed after the 30 s login deadline, so
    idle connections cannot hold the gateway's file descriptors."""
    import socket

    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.ssh_port), timeout=60) as silent:
        # The server sends its version line first; then nothing until it closes.
        received = b""
        while True:
            chunk = silent.recv(4096)
            if not chunk:
                break
            received += chunk
    elapsed = time.monotonic() - started
    assert received.startswith(b"SSH-2.0-")
    assert 25 <= elapsed <= 50, elapsed
