"""`process.exec` and `process.code_run` through the official SDK."""

import time

import pytest
from daytona import CodeRunParams, DaytonaTimeoutError


def test_exec_output_and_exit_code(sandbox):
    result = sandbox.process.exec("echo hello; exit 3")
    assert result.exit_code == 3
    assert result.result == "hello\n"


def test_exec_stderr_is_in_result(sandbox):
    result = sandbox.process.exec("sh -c 'echo to-out; echo to-err 1>&2; exit 3'")
    assert result.exit_code == 3
    assert "to-out" in result.result and "to-err" in result.result


def test_exec_missing_binary_is_127(sandbox):
    result = sandbox.process.exec("definitely-not-a-binary --version")
    assert result.exit_code == 127
    assert "command not found" in result.result


def test_exec_cwd(sandbox):
    sandbox.process.exec("mkdir -p /tmp/cwd-test")
    assert sandbox.process.exec("pwd", cwd="/tmp/cwd-test").result.strip() == "/tmp/cwd-test"


def test_exec_default_cwd_is_work_dir(sandbox):
    assert sandbox.process.exec("pwd").result.strip() == "/home/daytona"


def test_exec_env(sandbox):
    result = sandbox.process.exec('echo "[$FOO]"', env={"FOO": "bar baz"})
    assert result.result.strip() == "[bar baz]"


def test_exec_env_value_is_verbatim(sandbox):
    value = "quote\" $HOME `id` \\ end"
    result = sandbox.process.exec('printf %s "$TRICKY"', env={"TRICKY": value})
    assert result.result == value


def test_exec_heredoc(sandbox):
    result = sandbox.process.exec("cat <<'EOF'\nhello\nEOF")
    assert result.exit_code == 0
    assert result.result == "hello\n"


def test_exec_unterminated_quote_fails_fast(sandbox):
    started = time.monotonic()
    result = sandbox.process.exec("echo 'unterminated")
    assert result.exit_code == 2
    assert time.monotonic() - started < 10


def test_exec_long_command(sandbox):
    payload = "x" * (1024 * 1024)
    result = sandbox.process.exec(f"echo {payload} | wc -c")
    assert result.exit_code == 0
    assert result.result.strip() == str(len(payload) + 1)


def test_exec_runs_as_sandbox_user_with_sudo(sandbox):
    assert sandbox.process.exec("id -un").result.strip() == "daytona"
    assert sandbox.process.exec("sudo id -u").result.strip() == "0"


def test_exec_timeout(sandbox):
    started = time.monotonic()
    with pytest.raises(DaytonaTimeoutError) as raised:
        sandbox.process.exec("echo before-timeout; sleep 60", timeout=2)
    elapsed = time.monotonic() - started
    assert elapsed < 15
    assert raised.value.status_code == 408
    assert raised.value.code == "PROCESS_EXECUTION_TIMEOUT"
    # The whole process group was killed: no sleep survives.
    assert "sleep 60" not in sandbox.process.exec("ps -eo args").result


def test_exec_output_is_capped(sandbox):
    result = sandbox.process.exec("head -c 40000000 /dev/zero | tr '\\0' 'a'", timeout=120)
    assert result.exit_code == 0
    assert len(result.result) <= 16 * 1024 * 1024 + 4096
    assert "truncated" in result.result.splitlines()[-1]


def test_code_run_python(sandbox):
    result = sandbox.process.code_run("import sys\nprint('sum', sum(range(10)))\nsys.exit(4)")
    assert result.exit_code == 4
    assert result.result.strip() == "sum 45"


def test_code_run_python_argv_and_env(sandbox):
    code = "import os, sys\nprint(sys.argv[1:], os.environ['MODE'])"
    result = sandbox.process.code_run(code, params=CodeRunParams(argv=["a", "b"], env={"MODE": "test"}))
    assert result.result.strip() == "['a', 'b'] test"


def test_code_run_python_exception(sandbox):
    result = sandbox.process.code_run("raise ValueError('boom')")
    assert result.exit_code == 1
    assert "ValueError: boom" in result.result


def test_background_process_can_be_killed_by_a_later_exec(sandbox):
    sandbox.process.exec("nohup sleep 301 >/dev/null 2>&1 &")
    assert "sleep 301" in sandbox.process.exec("ps -eo args").result
    assert sandbox.process.exec("pkill -f 'sleep 301'").exit_code == 0
    assert "sleep 301" not in sandbox.process.exec("sleep 0.2; ps -eo args").result


def test_workload_cannot_kill_the_toolbox(sandbox):
    # Root in the sandbox signals every process it may; the toolbox and PID 1 are out of reach.
    sandbox.process.exec("sudo kill -9 -1")
    assert sandbox.process.exec("echo still-serving").result == "still-serving\n"
