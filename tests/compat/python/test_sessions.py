"""Sessions and PTY sessions through the official SDK (`sandbox.process.*`)."""

import asyncio
import time
import uuid

import pytest
from daytona import DaytonaError, DaytonaNotFoundError, PtySize, SessionExecuteRequest


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def session(sandbox):
    session_id = new_id("s")
    sandbox.process.create_session(session_id)
    yield session_id
    try:
        sandbox.process.delete_session(session_id)
    except DaytonaError:
        pass


def run(sandbox, session_id, command, **kwargs):
    return sandbox.process.execute_session_command(session_id, SessionExecuteRequest(command=command, **kwargs))


def wait_exit(sandbox, session_id, command_id, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        command = sandbox.process.get_session_command(session_id, command_id)
        if command.exit_code is not None:
            return command.exit_code
        time.sleep(0.1)
    raise AssertionError(f"command {command_id} still runs after {timeout} s")


def test_create_get_list_delete_session(sandbox):
    session_id = new_id("life")
    sandbox.process.create_session(session_id)
    session = sandbox.process.get_session(session_id)
    assert session.session_id == session_id
    assert session.commands == []
    assert session_id in [s.session_id for s in sandbox.process.list_sessions()]

    sandbox.process.delete_session(session_id)
    assert session_id not in [s.session_id for s in sandbox.process.list_sessions()]
    with pytest.raises(DaytonaNotFoundError):
        sandbox.process.get_session(session_id)


def test_execute_session_command_sync(sandbox, session):
    result = run(sandbox, session, "echo out; echo err >&2; exit 3")
    assert result.exit_code == 3
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"
    assert result.output == "out\nerr\n"
    assert result.cmd_id
    commands = sandbox.process.get_session(session).commands
    assert [(c.id, c.command, c.exit_code) for c in commands] == [
        (result.cmd_id, "echo out; echo err >&2; exit 3", 3)
    ]


def test_session_keeps_directory_and_exported_variables(sandbox, session):
    run(sandbox, session, "mkdir -p /tmp/session-dir && cd /tmp/session-dir")
    run(sandbox, session, "export SESSION_VAR='kept value'")
    result = run(sandbox, session, 'pwd; echo "$SESSION_VAR"; id -un')
    assert result.stdout == "/tmp/session-dir\nkept value\ndaytona\n"


def test_execute_session_command_async_and_get_session_command(sandbox, session):
    started = run(sandbox, session, "sleep 1; echo finished", run_async=True)
    assert started.exit_code is None
    command = sandbox.process.get_session_command(session, started.cmd_id)
    assert command.id == started.cmd_id
    assert command.command == "sleep 1; echo finished"
    assert command.exit_code is None
    assert wait_exit(sandbox, session, started.cmd_id) == 0
    assert sandbox.process.get_session_command_logs(session, started.cmd_id).stdout == "finished\n"


def test_two_async_commands_run_at_once(sandbox, session):
    begin = time.monotonic()
    first = run(sandbox, session, "sleep 3", run_async=True)
    second = run(sandbox, session, "sleep 3", run_async=True)
    assert wait_exit(sandbox, session, first.cmd_id) == 0
    assert wait_exit(sandbox, session, second.cmd_id) == 0
    elapsed = time.monotonic() - begin
    assert elapsed < 5, f"two 3-second commands took {elapsed:.1f} s"


def test_get_session_command_logs(sandbox, session):
    result = run(sandbox, session, "printf 'no newline'; printf 'to err' >&2")
    logs = sandbox.process.get_session_command_logs(session, result.cmd_id)
    assert logs.stdout == "no newline"
    assert logs.stderr == "to err"
    assert logs.output == "no newlineto err"


def test_get_session_command_logs_async_streams(sandbox, session):
    started = run(
        sandbox, session, "echo one; sleep 1; echo two >&2; sleep 1; echo three", run_async=True
    )
    stdout, stderr = [], []
    asyncio.run(
        sandbox.process.get_session_command_logs_async(session, started.cmd_id, stdout.append, stderr.append)
    )
    assert "".join(stdout) == "one\nthree\n"
    assert "".join(stderr) == "two\n"
    # The stream ended because the command did.
    assert sandbox.process.get_session_command(session, started.cmd_id).exit_code == 0


def test_send_session_command_input(sandbox, session):
    started = run(sandbox, session, 'read first; read second; echo "got $first and $second"', run_async=True)
    sandbox.process.send_session_command_input(session, started.cmd_id, "one\n")
    sandbox.process.send_session_command_input(session, started.cmd_id, "two\n")
    assert wait_exit(sandbox, session, started.cmd_id) == 0
    logs = sandbox.process.get_session_command_logs(session, started.cmd_id)
    assert logs.stdout.endswith("got one and two\n")


def test_entrypoint_session_and_logs(sandbox):
    entrypoint = sandbox.process.get_entrypoint_session()
    assert entrypoint.session_id == "entrypoint"
    assert entrypoint.commands == []
    logs = sandbox.process.get_entrypoint_logs()
    assert (logs.output, logs.stdout, logs.stderr) == ("", "", "")
    chunks = []
    asyncio.run(sandbox.process.get_entrypoint_logs_async(chunks.append, chunks.append))
    assert chunks == []


def test_ended_command_stays_readable(sandbox, session):
    """An ended command's exit code and logs stay readable later, also after more commands
    ran. The time to live itself (an hour) is tested in the daemon's tests."""
    result = run(sandbox, session, "echo kept; exit 5")
    for index in range(20):
        run(sandbox, session, f"echo filler {index}")
    time.sleep(3)
    assert sandbox.process.get_session_command(session, result.cmd_id).exit_code == 5
    assert sandbox.process.get_session_command_logs(session, result.cmd_id).stdout == "kept\n"


def test_env_per_command_is_verbatim_and_scoped(sandbox, session):
    """Variables for one command (the `envs` field, an addition the SDK passes
    through its additional properties) arrive verbatim and do not leak into later commands."""
    value = "quote\" 'single' $HOME `id` \\ new\nline"
    request = SessionExecuteRequest(command='printf %s "$TRICKY"')
    request.additional_properties = {"envs": {"TRICKY": value}}
    result = sandbox.process.execute_session_command(session, request)
    assert result.stdout == value
    assert run(sandbox, session, 'echo "[${TRICKY-unset}]"').stdout == "[unset]\n"


def test_delete_session_kills_its_commands(sandbox):
    session_id = new_id("kill")
    sandbox.process.create_session(session_id)
    run(sandbox, session_id, "sleep 427", run_async=True)
    assert "sleep 427" in sandbox.process.exec("ps -eo args").result
    sandbox.process.delete_session(session_id)
    deadline = time.monotonic() + 10
    while "sleep 427" in sandbox.process.exec("ps -eo args").result:
        assert time.monotonic() < deadline, "the deleted session's command still runs"
        time.sleep(0.2)


def collect(handle, timeout=20):
    output = bytearray()
    result = handle.wait(on_data=output.extend, timeout=timeout)
    return result, output.decode(errors="replace")


def test_create_pty_session_runs_shell_with_env_and_exit_code(sandbox):
    pty_id = new_id("pty")
    handle = sandbox.process.create_pty_session(
        pty_id, cwd="/tmp", envs={"PTY_VAR": "from envs"}, pty_size=PtySize(rows=30, cols=100)
    )
    try:
        handle.send_input('echo "[$PTY_VAR][$TERM][$(pwd)][$(id -un)]"; stty size; exit 3\n')
        result, output = collect(handle)
        assert result.exit_code == 3
        assert "[from envs][xterm-256color][/tmp][daytona]" in output
        assert "30 100" in output
    finally:
        handle.disconnect()


def test_connect_pty_session_list_info_resize_kill(sandbox):
    pty_id = new_id("pty")
    handle = sandbox.process.create_pty_session(pty_id)
    handle.disconnect()

    info = sandbox.process.get_pty_session_info(pty_id)
    assert (info.id, info.cols, info.rows, info.active, info.lazy_start) == (pty_id, 80, 24, True, False)
    assert info.cwd == "/home/daytona"
    assert info.created_at
    assert pty_id in [s.id for s in sandbox.process.list_pty_sessions()]

    handle = sandbox.process.connect_pty_session(pty_id)
    try:
        resized = handle.resize(PtySize(rows=50, cols=132))
        assert (resized.cols, resized.rows) == (132, 50)
        assert sandbox.process.resize_pty_session(pty_id, PtySize(rows=51, cols=133)).rows == 51
        handle.send_input("stty size\n")
        seen = bytearray()
        deadline = time.monotonic() + 10
        while b"51 133" not in seen and time.monotonic() < deadline:
            handle.wait(on_data=seen.extend, timeout=1)
        assert b"51 133" in seen

        handle.kill()
        result = handle.wait(timeout=10)
        assert result.exit_code == 137
    finally:
        handle.disconnect()
    assert pty_id not in [s.id for s in sandbox.process.list_pty_sessions()]
    with pytest.raises(DaytonaNotFoundError):
        sandbox.process.get_pty_session_info(pty_id)


def test_pty_output_while_detached_is_replayed(sandbox):
    pty_id = new_id("pty")
    handle = sandbox.process.create_pty_session(pty_id)
    handle.send_input('sleep 1; echo "detached""-output"\n')
    handle.disconnect()
    time.sleep(2)
    handle = sandbox.process.connect_pty_session(pty_id)
    try:
        seen = bytearray()
        deadline = time.monotonic() + 10
        while b"detached-output" not in seen and time.monotonic() < deadline:
            handle.wait(on_data=seen.extend, timeout=1)
        assert b"detached-output" in seen
    finally:
        handle.kill()
        handle.disconnect()
