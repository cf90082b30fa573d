"""Sandboxes outlive the server: a crashed server's sandboxes keep running and are adopted at
the next start; sandboxes whose processes died meanwhile come back stopped, with their files."""

import os
import signal

import pytest
from daytona import Daytona, DaytonaConfig

from daytona_server import Server
from host import sandbox_pid1


@pytest.fixture
def own_server():
    instance = Server()
    instance.start()
    yield instance
    instance.stop()
    instance.remove_data()


def client(server) -> Daytona:
    return Daytona(DaytonaConfig(api_key=server.api_key, api_url=server.api_url))


def crash_and_restart(server):
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    server.process = None
    server.start()


def test_crash_keeps_sandboxes_running(own_server):
    daytona = client(own_server)
    sandbox = daytona.create()
    sandbox.fs.upload_file(b"survives\n", "/home/daytona/state.txt")
    sandbox.process.exec("nohup sleep 600 >/dev/null 2>&1 &")
    pid1 = sandbox_pid1(own_server, sandbox.id)

    crash_and_restart(own_server)

    daytona = client(own_server)
    adopted = daytona.get(sandbox.id)
    assert adopted.state == "started"
    assert sandbox_pid1(own_server, sandbox.id) == pid1
    assert "sleep 600" in adopted.process.exec("ps -eo args").result
    assert adopted.fs.download_file("/home/daytona/state.txt") == b"survives\n"


def test_dead_sandbox_comes_back_stopped_with_files(own_server):
    daytona = client(own_server)
    sandbox = daytona.create()
    sandbox.fs.upload_file(b"kept\n", "/home/daytona/kept.txt")
    pid1 = sandbox_pid1(own_server, sandbox.id)

    own_server.process.send_signal(signal.SIGKILL)
    own_server.process.wait()
    own_server.process = None
    # What a host reboot does to the sandbox: its processes are gone.
    os.kill(pid1, signal.SIGKILL)
    own_server.start()

    daytona = client(own_server)
    restored = daytona.get(sandbox.id)
    assert restored.state == "stopped"
    restored.start()
    assert restored.state == "started"
    assert restored.fs.download_file("/home/daytona/kept.txt") == b"kept\n"
