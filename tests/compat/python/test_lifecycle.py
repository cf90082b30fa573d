"""Sandbox lifecycle through the official SDK: create, get, list, stop, start, delete."""

import time
import uuid

import pytest
from daytona import CreateSandboxFromSnapshotParams, DaytonaNotFoundError


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
