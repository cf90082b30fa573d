"""Sandbox lifecycle through the official SDK: create, get, list, stop, start, delete."""

import os
import signal
import time
import uuid


import pytest
from daytona import CreateSandboxFromSnapshotParams, DaytonaNotFoundError
from host import sandbox_cgroup_file, sandbox_pid1


def test_create_answers_started(daytona, server):
    started = time.monotonic()
    sandbox = daytona.create()
    elapsed = time.monotonic() - started
    try:
        assert sandbox.state == "started"
        assert sandbox.user == "daytona"
        assert sandbox.cpu == 1 and sandbox.memory == 1 and sandbox.disk == 3
        assert sandbox.labels.get("code-toolbox-language") == "python"
        # No state polling happened: the SDK polls at 1 s intervals when it has to.
        assert elapsed < 1.0, f"create took {elapsed:.2f} s, which means the SDK polled"
    finally:
        daytona.delete(sandbox)


def test_get_by_id_and_name(daytona):
    name = f"named-{uuid.uuid4().hex[:8]}"
    sandbox = daytona.create(CreateSandboxFromSnapshotParams(name=name, labels={"team": "compat"}))
    try:
        by_id = daytona.get(sandbox.id)
        by_name = daytona.get(name)
        assert by_id.id == sandbox.id == by_name.id
        assert by_name.name == name
        assert by_id.labels["team"] == "compat"
    finally:
        daytona.delete(sandbox)


def test_list_contains_created(daytona):
    sandbox = daytona.create(CreateSandboxFromSnapshotParams(labels={"list-marker": sandbox_marker()}))
    try:
        ids = [item.id for item in daytona.list()]
        assert sandbox.id in ids
    finally:
        daytona.delete(sandbox)


def sandbox_marker() -> str:
    return uuid.uuid4().hex


def test_delete_then_get_is_not_found(daytona):
    sandbox = daytona.create()
    daytona.delete(sandbox)
    with pytest.raises(DaytonaNotFoundError):
        daytona.get(sandbox.id)


def test_name_reusable_after_delete(daytona):
    name = f"reuse-{uuid.uuid4().hex[:8]}"
    first = daytona.create(CreateSandboxFromSnapshotParams(name=name))
    daytona.delete(first)
    second = daytona.create(CreateSandboxFromSnapshotParams(name=name))
    try:
        assert second.id != first.id
    finally:
        daytona.delete(second)


def test_env_vars_from_create(daytona):
    sandbox = daytona.create(CreateSandboxFromSnapshotParams(env_vars={"GREETING": "hello world"}))
    try:
        result = sandbox.process.exec('echo "[$GREETING]"')
        assert result.result.strip() == "[hello world]"
    finally:
        daytona.delete(sandbox)


def test_stop_keeps_files_and_start_brings_them_back(daytona):
    sandbox = daytona.create()
    try:
        sandbox.fs.upload_file(b"kept across stop\n", "/home/daytona/kept.txt")
        sandbox.stop()
        assert sandbox.state == "stopped"
        sandbox.start()
        assert sandbox.state == "started"
        assert sandbox.fs.download_file("/home/daytona/kept.txt") == b"kept across stop\n"
    finally:
        daytona.delete(sandbox)


def test_home_and_work_dir(sandbox):
    assert sandbox.get_user_home_dir() == "/home/daytona"
    assert sandbox.get_work_dir() == "/home/daytona"


def test_env_survives_toolbox_restart(daytona, server):
    sandbox = daytona.create(CreateSandboxFromSnapshotParams(env_vars={"KEEP_ME": "yes"}))
    try:
        pid1 = sandbox_pid1(server, sandbox.id)
        with open(f"/proc/{pid1}/task/{pid1}/children") as children:
            for pid in children.read().split():
                with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                    if b"toolbox" in cmdline.read():
                        os.kill(int(pid), signal.SIGKILL)
        deadline = time.monotonic() + 15
        while True:
            try:
                result = sandbox.process.exec('echo "[$KEEP_ME]"')
                break
            except Exception:  # noqa: BLE001 - the toolbox is restarting
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert result.result.strip() == "[yes]"
    finally:
        daytona.delete(sandbox)


def test_create_as_root_user(daytona):
    sandbox = daytona.create(CreateSandboxFromSnapshotParams(os_user="root"))
    try:
        assert sandbox.user == "root"
        assert sandbox.process.exec("id -u").result.strip() == "0"
        assert sandbox.get_user_home_dir() == "/root"
    finally:
        daytona.delete(sandbox)


def test_create_with_more_resources(daytona, server):
    status, body = server.request("POST", "/sandbox", body={"cpu": 2, "memory": 2})
    assert status == 200, body
    try:
        assert body["cpu"] == 2 and body["memory"] == 2
        with open(sandbox_cgroup_file(body["id"], "memory", "memory.limit_in_bytes")) as limit:
            assert int(limit.read()) == 2 << 30
    finally:
        server.request("DELETE", f"/sandbox/{body['id']}")
