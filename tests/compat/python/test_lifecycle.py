"""Sandbox lifecycle through the official SDK: create, get, list, start, stop, recover,
delete, resize, labels, the auto-stop, auto-delete and TTL timers, and the lifecycle cases of
CASES.md (B14 to B17, B20, B21)."""

import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from daytona import (
    CreateSandboxFromSnapshotParams,
    Daytona,
    DaytonaBadRequestError,
    DaytonaConfig,
    DaytonaError,
    DaytonaNotFoundError,
    ListSandboxesQuery,
    Resources,
    SessionExecuteRequest,
)
from daytona_server import Server
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


# State machine, settings and the reconciler.


def wait_until(predicate, timeout: float, interval: float = 0.25, what: str = "condition"):
    """Polls `predicate` until it returns a truthy value, which it returns; fails after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def state_or_gone(daytona, sandbox_id: str) -> str:
    """Returns the sandbox's state, or "gone" once GET returns 404."""
    try:
        return daytona.get(sandbox_id).state
    except DaytonaNotFoundError:
        return "gone"


# One lifecycle minute is one second on this server, so that auto-stop, auto-delete and TTL
# tests take seconds. Its starts hang while `hang_file` exists, and its transitions time out
# after 5 s.
FAST_MINUTE_ARGS = ["--lifecycle-minute", "1", "--transition-timeout", "5"]


@pytest.fixture(scope="module")
def fast_server():
    hang_dir = tempfile.mkdtemp(prefix="dtn-hang-", dir="/tmp")
    hang_file = os.path.join(hang_dir, "hang")
    instance = Server([*FAST_MINUTE_ARGS, "--test-hang-start-file", hang_file])
    instance.hang_file = hang_file
    try:
        instance.start()
        yield instance
    finally:
        shutil.rmtree(hang_dir, ignore_errors=True)
        try:
            instance.stop()
        finally:
            instance.remove_data()


@pytest.fixture(scope="module")
def fast(fast_server):
    return Daytona(DaytonaConfig(api_key=fast_server.api_key, api_url=fast_server.api_url))


class HangStarts:
    """Makes the server's sandbox starts hang while the block runs."""

    def __init__(self, server):
        self.path = server.hang_file

    def __enter__(self):
        open(self.path, "w").close()
        return self

    def __exit__(self, *exc):
        if os.path.exists(self.path):
            os.remove(self.path)


def test_stop_and_start_report_new_state(daytona):
    # CASES B17: the responses and the next GET report the new state.
    sandbox = daytona.create()
    try:
        sandbox.stop()
        assert sandbox.state == "stopped"
        assert daytona.get(sandbox.id).state == "stopped"
        sandbox.refresh_data()
        assert sandbox.state == "stopped"
        sandbox.start()
        assert sandbox.state == "started"
        assert daytona.get(sandbox.id).state == "started"
        assert sandbox.process.exec("echo back").result.strip() == "back"
    finally:
        sandbox.delete()
    assert sandbox.state == "destroyed"
    with pytest.raises(DaytonaNotFoundError):
        daytona.get(sandbox.id)


def test_force_stop(daytona):
    sandbox = daytona.create()
    try:
        sandbox.process.exec("nohup sh -c 'trap \"\" TERM; sleep 600' >/dev/null 2>&1 &")
        started = time.monotonic()
        sandbox.stop(force=True)
        assert sandbox.state == "stopped"
        assert time.monotonic() - started < 3, "force stop waited for a grace time"
    finally:
        daytona.delete(sandbox)


def test_wait_for_start_and_stop(daytona, server):
    sandbox = daytona.create()
    try:
        # Another client stops and starts it; this object's waits follow.
        status, body = server.request("POST", f"/sandbox/{sandbox.id}/stop")
        assert status == 200, body
        assert body["state"] == "stopped"
        sandbox.wait_for_sandbox_stop(timeout=30)
        assert sandbox.state == "stopped"
        status, body = server.request("POST", f"/sandbox/{sandbox.id}/start")
        assert status == 200, body
        assert body["state"] == "started"
        sandbox.wait_for_sandbox_start(timeout=30)
        assert sandbox.state == "started"
    finally:
        daytona.delete(sandbox)


def test_start_twice_and_stop_twice(daytona):
    sandbox = daytona.create()
    try:
        sandbox.start()
        assert sandbox.state == "started"
        sandbox.stop()
        sandbox.stop()
        assert sandbox.state == "stopped"
    finally:
        daytona.delete(sandbox)


def test_resize_started_and_stopped(daytona):
    sandbox = daytona.create()
    try:
        sandbox.resize(Resources(cpu=2, memory=2))
        assert (sandbox.cpu, sandbox.memory) == (2, 2)
        with open(sandbox_cgroup_file(sandbox.id, "memory", "memory.limit_in_bytes")) as limit:
            assert int(limit.read()) == 2 << 30
        with open(sandbox_cgroup_file(sandbox.id, "cpu", "cpu.cfs_quota_us")) as quota:
            assert int(quota.read()) == 200000
        # A started sandbox only grows, and keeps its disk.
        with pytest.raises(DaytonaBadRequestError):
            sandbox.resize(Resources(cpu=1))
        with pytest.raises(DaytonaBadRequestError):
            sandbox.resize(Resources(disk=5))

        sandbox.stop()
        sandbox.resize(Resources(cpu=1, memory=1, disk=5))
        assert (sandbox.cpu, sandbox.memory, sandbox.disk) == (1, 1, 5)
        with pytest.raises(DaytonaBadRequestError):
            sandbox.resize(Resources(disk=4))
        sandbox.start()
        with open(sandbox_cgroup_file(sandbox.id, "memory", "memory.limit_in_bytes")) as limit:
            assert int(limit.read()) == 1 << 30
        assert daytona.get(sandbox.id).disk == 5
    finally:
        daytona.delete(sandbox)


def test_set_labels_replaces_the_map(daytona):
    sandbox = daytona.create(CreateSandboxFromSnapshotParams(labels={"old": "1"}))
    try:
        labels = sandbox.set_labels({"team": "lifecycle", "code-toolbox-language": "python"})
        assert labels == {"team": "lifecycle", "code-toolbox-language": "python"}
        assert sandbox.labels == labels
        assert daytona.get(sandbox.id).labels == labels
        with pytest.raises(DaytonaBadRequestError):
            sandbox.set_labels({"code-toolbox-language": "cobol"})
    finally:
        daytona.delete(sandbox)


def test_interval_setters(daytona):
    sandbox = daytona.create()
    try:
        sandbox.set_autostop_interval(0)
        sandbox.set_auto_archive_interval(120)
        sandbox.set_auto_delete_interval(30)
        sandbox.set_auto_pause_interval(7)
        sandbox.refresh_data()
        assert sandbox.auto_stop_interval == 0
        assert sandbox.auto_archive_interval == 120
        assert sandbox.auto_delete_interval == 30
        assert sandbox.auto_pause_interval == 7
        sandbox.set_auto_delete_interval(-1)
        sandbox.set_autostop_interval(45)
        sandbox.refresh_data()
        assert sandbox.auto_delete_interval == -1
        assert sandbox.auto_stop_interval == 45
    finally:
        daytona.delete(sandbox)


def test_set_ttl(daytona):
    from datetime import datetime, timezone

    sandbox = daytona.create()
    try:
        sandbox.set_ttl(60)
        sandbox.refresh_data()
        destroy_at = datetime.fromisoformat(sandbox.auto_destroy_at.replace("Z", "+00:00"))
        ahead = (destroy_at - datetime.now(timezone.utc)).total_seconds()
        assert 3500 < ahead <= 3600
        sandbox.set_ttl(0)
        sandbox.refresh_data()
        assert sandbox.auto_destroy_at is None
    finally:
        daytona.delete(sandbox)


def test_refresh_activity_moves_last_activity(daytona):
    sandbox = daytona.create()
    try:
        before = daytona.get(sandbox.id).last_activity_at
        time.sleep(1.1)
        sandbox.refresh_activity()
        sandbox.refresh_data()
        assert sandbox.last_activity_at > before
    finally:
        daytona.delete(sandbox)


def test_pause_is_400(daytona):
    sandbox = daytona.create()
    try:
        with pytest.raises(DaytonaBadRequestError, match="cannot be paused"):
            sandbox.pause()
        assert daytona.get(sandbox.id).state == "started"
    finally:
        daytona.delete(sandbox)


def test_recover_needs_error_state(daytona):
    sandbox = daytona.create()
    try:
        with pytest.raises(DaytonaBadRequestError, match="started"):
            sandbox.recover()
    finally:
        daytona.delete(sandbox)


def test_list_filters_sorting_and_pages(daytona):
    marker = uuid.uuid4().hex[:8]
    created = []
    try:
        for index in range(5):
            created.append(
                daytona.create(
                    CreateSandboxFromSnapshotParams(
                        name=f"page-{marker}-{index}", labels={"batch": marker, "index": str(index)}
                    )
                )
            )
        created[1].stop()
        created[3].stop()

        by_label = list(daytona.list(ListSandboxesQuery(labels={"batch": marker}, limit=2)))
        assert sorted(s.name for s in by_label) == sorted(s.name for s in created)

        stopped = list(daytona.list(ListSandboxesQuery(labels={"batch": marker}, states=["stopped"])))
        assert sorted(s.name for s in stopped) == [created[1].name, created[3].name]
        assert all(s.state == "stopped" for s in stopped)

        ascending = list(
            daytona.list(ListSandboxesQuery(labels={"batch": marker}, sort="name", order="asc", limit=2))
        )
        assert [s.name for s in ascending] == [s.name for s in created]
        descending = list(
            daytona.list(ListSandboxesQuery(labels={"batch": marker}, sort="name", order="desc", limit=3))
        )
        assert [s.name for s in descending] == [s.name for s in reversed(created)]

        by_prefix = list(daytona.list(ListSandboxesQuery(name=f"PAGE-{marker}-1")))
        assert [s.id for s in by_prefix] == [created[1].id]
    finally:
        for sandbox in created:
            daytona.delete(sandbox)


def test_create_delete_storm(daytona):
    # CASES B20: 40 create/delete tasks, 15 in flight; none fails.
    def create_and_delete(_):
        sandbox = daytona.create()
        sandbox.process.exec("true")
        daytona.delete(sandbox)
        return sandbox.id

    with ThreadPoolExecutor(max_workers=15) as pool:
        ids = list(pool.map(create_and_delete, range(40)))
    assert len(set(ids)) == 40
    for sandbox_id in ids:
        with pytest.raises(DaytonaNotFoundError):
            daytona.get(sandbox_id)


def test_delete_in_starting(fast, fast_server):
    # CASES B14: a sandbox stuck in `starting` is deleted at once, with its resources.
    sandbox = fast.create(CreateSandboxFromSnapshotParams(auto_stop_interval=0))
    sandbox.stop()
    outcome = {}

    def start():
        try:
            sandbox.start(timeout=60)
            outcome["result"] = "started"
        except DaytonaError as error:  # the delete interrupts the start
            outcome["result"] = error

    with HangStarts(fast_server):
        starter = threading.Thread(target=start)
        starter.start()
        wait_until(lambda: fast.get(sandbox.id).state == "starting", 10, what="starting")
        status, body = fast_server.request("POST", f"/sandbox/{sandbox.id}/stop")
        assert status == 409, body
        assert "state change in progress" in body["message"]
        began = time.monotonic()
        fast.delete(sandbox)
        assert time.monotonic() - began < 5
        starter.join(timeout=30)
    assert isinstance(outcome.get("result"), DaytonaError)
    with pytest.raises(DaytonaNotFoundError):
        fast.get(sandbox.id)
    assert not os.path.exists(os.path.join(fast_server.data_dir, "sandboxes", sandbox.id))
    assert not os.path.exists(sandbox_cgroup_file(sandbox.id, "memory", ""))


def test_start_deadline_error_and_recover(fast, fast_server):
    # CASES B14, B16: `starting` past its deadline becomes `error`, which frees CPU and memory
    # and keeps the files; recover starts it again.
    sandbox = fast.create(CreateSandboxFromSnapshotParams(auto_stop_interval=0))
    try:
        sandbox.fs.upload_file(b"still here\n", "/home/daytona/kept.txt")
        sandbox.stop()
        with HangStarts(fast_server):
            began = time.monotonic()
            status, body = fast_server.request("POST", f"/sandbox/{sandbox.id}/start")
            waited = time.monotonic() - began
        assert status == 200, body
        assert body["state"] == "error"
        assert "did not finish within 5 s" in body["errorReason"]
        assert body["recoverable"] is True
        assert 4.5 < waited < 15
        assert "did not start in time" in fast_server.log_tail(200)
        assert not os.path.exists(sandbox_cgroup_file(sandbox.id, "memory", ""))
        assert os.path.isfile(os.path.join(fast_server.data_dir, "sandboxes", sandbox.id, "disk.img"))

        sandbox.refresh_data()
        assert sandbox.state == "error"
        with pytest.raises(DaytonaBadRequestError, match="error"):
            sandbox.start()
        errored = list(fast.list(ListSandboxesQuery(is_recoverable=True)))
        assert sandbox.id in [s.id for s in errored]

        sandbox.recover()
        assert sandbox.state == "started"
        assert sandbox.fs.download_file("/home/daytona/kept.txt") == b"still here\n"
    finally:
        fast.delete(sandbox)


def test_delete_in_error(fast, fast_server):
    sandbox = fast.create(CreateSandboxFromSnapshotParams(auto_stop_interval=0))
    sandbox.stop()
    with HangStarts(fast_server):
        status, body = fast_server.request("POST", f"/sandbox/{sandbox.id}/start")
    assert body["state"] == "error", body
    fast.delete(sandbox)
    with pytest.raises(DaytonaNotFoundError):
        fast.get(sandbox.id)
    assert not os.path.exists(os.path.join(fast_server.data_dir, "sandboxes", sandbox.id))


def test_auto_stop_when_idle(fast):
    sandbox = fast.create(CreateSandboxFromSnapshotParams(auto_stop_interval=3))
    try:
        began = time.monotonic()
        # Polling the state is not activity.
        wait_until(lambda: fast.get(sandbox.id).state == "stopped", 30, what="auto-stop")
        assert time.monotonic() - began > 2
    finally:
        fast.delete(sandbox)


def test_auto_stop_waits_for_long_job(fast):
    # CASES B21: a job running inside the sandbox is activity, with no client attached.
    sandbox = fast.create(CreateSandboxFromSnapshotParams(auto_stop_interval=3))
    try:
        sandbox.process.create_session("job")
        sandbox.process.execute_session_command(
            "job", SessionExecuteRequest(command="sleep 300", run_async=True)
        )
        sandbox.process.exec("nohup sleep 300 >/dev/null 2>&1 &")
        # Ten lifecycle minutes pass while the jobs run, polled like the report did.
        for _ in range(10):
            time.sleep(1)
            assert fast.get(sandbox.id).state == "started"
        last = fast.get(sandbox.id).last_activity_at
        time.sleep(2)
        assert fast.get(sandbox.id).last_activity_at > last, "lastActivityAt does not move"

        sandbox.process.exec("pkill sleep || true")
        wait_until(lambda: fast.get(sandbox.id).state == "stopped", 30, what="auto-stop after the job")
    finally:
        fast.delete(sandbox)


def test_blocking_exec_is_activity(fast):
    sandbox = fast.create(CreateSandboxFromSnapshotParams(auto_stop_interval=2))
    try:
        # The request stays open for 6 lifecycle minutes.
        result = sandbox.process.exec("sleep 6; echo done", timeout=30)
        assert result.result.strip() == "done"
        assert fast.get(sandbox.id).state == "started"
    finally:
        fast.delete(sandbox)


def test_refresh_activity_keeps_sandbox_running(fast):
    sandbox = fast.create(CreateSandboxFromSnapshotParams(auto_stop_interval=3))
    try:
        for _ in range(8):
            sandbox.refresh_activity()
            time.sleep(1)
        assert fast.get(sandbox.id).state == "started"
        wait_until(lambda: fast.get(sandbox.id).state == "stopped", 30, what="auto-stop")
    finally:
        fast.delete(sandbox)


def test_auto_delete_after_stop(fast):
    sandbox = fast.create(CreateSandboxFromSnapshotParams(auto_stop_interval=0, auto_delete_interval=3))
    sandbox.stop()
    assert fast.get(sandbox.id).state == "stopped"
    wait_until(lambda: state_or_gone(fast, sandbox.id) == "gone", 30, what="auto-delete")


def test_ephemeral_deleted_on_stop(fast):
    sandbox = fast.create(CreateSandboxFromSnapshotParams(auto_stop_interval=0, ephemeral=True))
    assert sandbox.auto_delete_interval == 0
    sandbox.stop()
    wait_until(lambda: state_or_gone(fast, sandbox.id) == "gone", 15, what="ephemeral delete")


def test_ttl_deletes_sandbox(fast):
    sandbox = fast.create(CreateSandboxFromSnapshotParams(auto_stop_interval=0))
    sandbox.set_ttl(2)
    wait_until(lambda: state_or_gone(fast, sandbox.id) == "gone", 30, what="TTL delete")


def test_ephemeral_auto_stopped_sandboxes_free_everything(fast, fast_server):
    # CASES B15: ephemeral sandboxes with a short auto-stop are deleted, not left in
    # `destroying`, and a new create works afterwards.
    marker = uuid.uuid4().hex[:8]
    ids = [
        fast.create(
            CreateSandboxFromSnapshotParams(ephemeral=True, auto_stop_interval=2, labels={"b15": marker})
        ).id
        for _ in range(5)
    ]
    wait_until(
        lambda: not list(fast.list(ListSandboxesQuery(labels={"b15": marker}))),
        60,
        what="ephemeral sandboxes deleted",
    )
    for sandbox_id in ids:
        assert not os.path.exists(os.path.join(fast_server.data_dir, "sandboxes", sandbox_id))
    extra = fast.create(CreateSandboxFromSnapshotParams(auto_stop_interval=0))
    fast.delete(extra)
