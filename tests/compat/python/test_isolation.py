"""Isolation seen from inside a sandbox, through the official SDK."""

import json
import os
import uuid

import pytest
from daytona import DaytonaNotFoundError
from host import sandbox_cgroup_file


@pytest.fixture
def host_marker():
    """A file on the host that no sandbox may see."""
    path = f"/tmp/host-only-{uuid.uuid4().hex}"
    with open(path, "w") as marker:
        marker.write("host secret\n")
    yield path
    os.unlink(path)


def test_host_files_are_not_visible(sandbox, host_marker):
    assert sandbox.process.exec(f"cat {host_marker}").exit_code != 0
    assert sandbox.process.exec(f"sudo cat /proc/1/root{host_marker}").exit_code != 0
    assert sandbox.process.exec(f"cat /../../..{host_marker}").exit_code != 0
    with pytest.raises(DaytonaNotFoundError):
        sandbox.fs.download_file(f"../../../..{host_marker}")


def test_root_inside_is_not_root_outside(server, sandbox):
    uid_map = sandbox.process.exec("cat /proc/self/uid_map").result.split()
    assert uid_map[0] == "0"
    host_base = int(uid_map[1])
    assert host_base >= 100000
    # A file that root creates inside is owned by that host uid, seen from the host through
    # the sandbox's PID 1 (the writable layer is in the sandbox's own disk image).
    assert sandbox.process.exec("sudo touch /root-made-this").exit_code == 0
    with open(os.path.join(server.data_dir, "sandboxes", sandbox.id, "sandbox.json")) as record:
        pid1 = json.load(record)["process"]["pid"]
    assert os.stat(f"/proc/{pid1}/root/root-made-this").st_uid == host_base


def test_mount_table_shows_no_host_paths(server, sandbox):
    # /proc/mounts lists sources and options; the overlay's directories are relative.
    mounts = sandbox.process.exec("cat /proc/mounts").result
    assert "upperdir=disk/upper" in mounts
    assert server.data_dir not in mounts
    assert "/var/cache/daytona" not in mounts


def test_sandboxes_do_not_see_each_other(daytona, sandbox):
    other = daytona.create()
    try:
        marker = uuid.uuid4().hex
        other.process.exec(f"sleep 300 {marker} >/dev/null 2>&1 &")
        assert marker not in sandbox.process.exec("ps -eo args").result
        other.fs.upload_file(marker.encode(), "/tmp/other-marker")
        assert sandbox.process.exec("cat /tmp/other-marker").exit_code != 0
    finally:
        daytona.delete(other)


def test_network_has_loopback_only(sandbox):
    interfaces = sandbox.process.exec("ls /sys/class/net").result.split()
    assert interfaces == ["lo"]


def test_namespace_creation_refused(sandbox):
    assert sandbox.process.exec("sudo unshare -U true").exit_code != 0
    assert sandbox.process.exec("sudo unshare -n true").exit_code != 0


def test_seccomp_and_limits(sandbox):
    status = sandbox.process.exec("cat /proc/self/status").result
    assert "Seccomp:\t2" in status
    with open(sandbox_cgroup_file(sandbox.id, "pids", "pids.max")) as pids_max:
        assert pids_max.read().strip() == "2048"
    with open(sandbox_cgroup_file(sandbox.id, "memory", "memory.limit_in_bytes")) as memory_max:
        assert int(memory_max.read()) == 1 << 30


def test_killing_pid1_is_contained(daytona, sandbox):
    sandbox.process.exec("sudo kill -9 1")
    assert sandbox.process.exec("echo alive").result == "alive\n"
