"""`sandbox.code_interpreter` through the official SDK: runs, contexts and timeouts."""

import time

import pytest
from daytona import DaytonaError, DaytonaTimeoutError
from daytona_toolbox_api_client import InterpreterContext


def test_run_code_callbacks(sandbox):
    stdout, stderr, errors = [], [], []
    result = sandbox.code_interpreter.run_code(
        "import sys\nprint('to out')\nprint('to err', file=sys.stderr)\n1/0",
        on_stdout=lambda message: stdout.append(message.output),
        on_stderr=lambda message: stderr.append(message.output),
        on_error=errors.append,
    )
    assert "".join(stdout) == "to out\n"
    assert "".join(stderr) == "to err\n"
    assert result.stdout == "to out\n"
    assert result.stderr == "to err\n"
    assert len(errors) == 1
    assert errors[0].name == "ZeroDivisionError"
    assert errors[0].value == "division by zero"
    assert "1/0" in errors[0].traceback
    assert result.error.name == "ZeroDivisionError"


def test_state_is_kept_between_runs(sandbox):
    sandbox.code_interpreter.run_code("import math\ncounter = 40\ndef bump():\n    global counter\n    counter += 1")
    sandbox.code_interpreter.run_code("bump()")
    result = sandbox.code_interpreter.run_code("bump()\nprint(counter, math.floor(2.5))")
    assert result.stdout == "42 2\n"
    assert result.error is None


def test_output_streams_while_running(sandbox):
    arrivals = []
    started = time.monotonic()
    sandbox.code_interpreter.run_code(
        "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.5)",
        on_stdout=lambda message: arrivals.append(time.monotonic() - started),
    )
    assert len(arrivals) >= 2
    # The first line arrived long before the run ended.
    assert arrivals[0] < arrivals[-1] - 0.5


def test_envs_apply_to_one_run(sandbox):
    result = sandbox.code_interpreter.run_code(
        "import os\nprint(os.environ['RUN_ONLY'])", envs={"RUN_ONLY": "quote\" $HOME `id`"}
    )
    assert result.stdout == "quote\" $HOME `id`\n"
    after = sandbox.code_interpreter.run_code("import os\nprint(os.environ.get('RUN_ONLY'))")
    assert after.stdout == "None\n"


def test_runs_as_sandbox_user(sandbox):
    result = sandbox.code_interpreter.run_code("import os, sys\nprint(os.getuid(), os.getcwd())\nprint(sys.argv[0])")
    ids, script = result.stdout.splitlines()
    assert ids == "1000 /home/daytona"
    # The worker script is outside the user's home and the user cannot change it.
    assert not script.startswith("/home/daytona")
    check = sandbox.process.exec(f"test -w {script} && echo writable || echo read-only")
    assert check.result.strip() == "read-only"


def test_create_list_and_delete_context(sandbox):
    sandbox.process.exec("mkdir -p /tmp/ctx-dir")
    context = sandbox.code_interpreter.create_context(cwd="/tmp/ctx-dir")
    assert context.cwd == "/tmp/ctx-dir"
    assert context.language == "python"
    assert context.created_at
    assert isinstance(context.active, bool)

    listed = sandbox.code_interpreter.list_contexts()
    assert context.id in [item.id for item in listed]
    assert "default" not in [item.id for item in listed]

    result = sandbox.code_interpreter.run_code("import os\nprint(os.getcwd())", context=context)
    assert result.stdout == "/tmp/ctx-dir\n"

    sandbox.code_interpreter.delete_context(context)
    assert context.id not in [item.id for item in sandbox.code_interpreter.list_contexts()]
    with pytest.raises(DaytonaError):
        sandbox.code_interpreter.delete_context(context)


def test_contexts_are_isolated(sandbox):
    first = sandbox.code_interpreter.create_context()
    second = sandbox.code_interpreter.create_context()
    try:
        sandbox.code_interpreter.run_code("secret = 'one'", context=first)
        sandbox.code_interpreter.run_code("secret = 'two'", context=second)
        assert sandbox.code_interpreter.run_code("print(secret)", context=first).stdout == "one\n"
        assert sandbox.code_interpreter.run_code("print(secret)", context=second).stdout == "two\n"
        default = sandbox.code_interpreter.run_code("print(secret)")
        assert default.error is not None and default.error.name == "NameError"
    finally:
        sandbox.code_interpreter.delete_context(first)
        sandbox.code_interpreter.delete_context(second)


def test_default_context_cannot_be_deleted(sandbox):
    default = InterpreterContext(id="default", cwd="/home/daytona", language="python", created_at="", active=True)
    with pytest.raises(DaytonaError) as raised:
        sandbox.code_interpreter.delete_context(default)
    assert raised.value.status_code == 400


def test_unknown_context_is_an_error(sandbox):
    missing = InterpreterContext(id="no-such-context", cwd="/", language="python", created_at="", active=False)
    with pytest.raises(DaytonaError) as raised:
        sandbox.code_interpreter.run_code("print(1)", context=missing)
    assert "not found" in str(raised.value)


def test_timeout_keeps_state_and_raises(sandbox):
    """B06: the timeout is enforced at N seconds, and the context survives it."""
    context = sandbox.code_interpreter.create_context()
    try:
        sandbox.code_interpreter.run_code("survivor = 'still here'", context=context)
        outputs = []
        started = time.monotonic()
        with pytest.raises(DaytonaTimeoutError):
            sandbox.code_interpreter.run_code(
                "import time\nprint('sleeping', flush=True)\ntime.sleep(100)",
                context=context,
                timeout=3,
                on_stdout=lambda message: outputs.append(message.output),
            )
        elapsed = time.monotonic() - started
        assert 3 <= elapsed < 6, f"timeout of 3 s enforced after {elapsed:.2f} s"
        assert "".join(outputs) == "sleeping\n"

        after = sandbox.code_interpreter.run_code("print(survivor)", context=context)
        assert after.stdout == "still here\n"
        listed = {item.id: item for item in sandbox.code_interpreter.list_contexts()}
        assert listed[context.id].additional_properties.get("restarted") is False
    finally:
        sandbox.code_interpreter.delete_context(context)


def test_ignored_interrupt_restarts_and_says_so(sandbox):
    context = sandbox.code_interpreter.create_context()
    try:
        sandbox.code_interpreter.run_code("lost = 1", context=context)
        errors = []
        with pytest.raises(DaytonaTimeoutError):
            sandbox.code_interpreter.run_code(
                "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(100)",
                context=context,
                timeout=1,
                on_error=errors.append,
            )
        assert [error.name for error in errors] == ["InterpreterRestarted"]
        assert "lost" in errors[0].value

        listed = {item.id: item for item in sandbox.code_interpreter.list_contexts()}
        assert listed[context.id].additional_properties.get("restarted") is True
        assert listed[context.id].active is True
        after = sandbox.code_interpreter.run_code("print(lost)", context=context)
        assert after.error is not None and after.error.name == "NameError"
    finally:
        sandbox.code_interpreter.delete_context(context)
