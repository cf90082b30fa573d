"""`process.code_run` in Python, JavaScript and TypeScript sandboxes through the official SDK."""

import time

import pytest
from daytona import CodeRunParams, CreateSandboxFromSnapshotParams
from daytona_toolbox_api_client.exceptions import ApiException


def _assert_times_out(sandbox, code):
    """Runs code with a 2 s timeout. `code_run` (unlike `exec`) does not map errors to the SDK's
    exception classes in SDK 0.226.1, so the 408 arrives as the generated client's exception."""
    started = time.monotonic()
    with pytest.raises(ApiException) as raised:
        sandbox.process.code_run(code, timeout=2)
    assert raised.value.status == 408
    assert "PROCESS_EXECUTION_TIMEOUT" in raised.value.body
    assert time.monotonic() - started < 10


def _sandbox_for(daytona, language):
    return daytona.create(CreateSandboxFromSnapshotParams(language=language))


@pytest.fixture(scope="module")
def js_sandbox(daytona):
    created = _sandbox_for(daytona, "javascript")
    yield created
    daytona.delete(created)


@pytest.fixture(scope="module")
def ts_sandbox(daytona):
    created = _sandbox_for(daytona, "typescript")
    yield created
    daytona.delete(created)


def test_python_argv_and_env(sandbox):
    code = "import os, sys\nprint(sys.argv[1:])\nprint(os.environ['GREETING'])"
    result = sandbox.process.code_run(code, params=CodeRunParams(argv=["a", "b c"], env={"GREETING": "hello"}))
    assert result.exit_code == 0
    assert result.result == "['a', 'b c']\nhello\n"


def test_python_exit_code_and_error(sandbox):
    result = sandbox.process.code_run("print('before')\n1/0")
    assert result.exit_code == 1
    assert "before" in result.result
    assert "ZeroDivisionError" in result.result


def test_python_timeout(sandbox):
    _assert_times_out(sandbox, "import time\ntime.sleep(60)")


def test_python_chart_artifact(sandbox):
    code = (
        "import json\n"
        "print('before')\n"
        "print('dtn_artifact_k39fd2:' + json.dumps({'type': 'chart', 'value': "
        "{'type': 'line', 'title': 'Sine', 'elements': []}}))\n"
        "print('after')"
    )
    result = sandbox.process.code_run(code)
    assert result.result == "before\nafter\n"
    assert len(result.artifacts.charts) == 1
    assert result.artifacts.charts[0].title == "Sine"


def test_javascript_argv_env_and_exit_code(js_sandbox):
    code = "console.log(process.argv.slice(2).join(','), process.env.GREETING); process.exit(3)"
    result = js_sandbox.process.code_run(code, params=CodeRunParams(argv=["x", "y"], env={"GREETING": "hi"}))
    assert result.exit_code == 3
    assert result.result == "x,y hi\n"


def test_javascript_runs_as_sandbox_user(js_sandbox):
    result = js_sandbox.process.code_run("console.log(process.getuid(), process.cwd(), process.version)")
    uid, cwd, version = result.result.split()
    assert (uid, cwd) == ("1000", "/home/daytona")
    assert version.startswith("v18.")


def test_javascript_timeout(js_sandbox):
    _assert_times_out(js_sandbox, "setTimeout(() => {}, 60000)")


def test_typescript_types_imports_argv_and_env(ts_sandbox):
    code = (
        "import * as path from 'path';\n"
        "interface Greeting { text: string }\n"
        "const greeting: Greeting = { text: process.env.GREETING ?? '' };\n"
        "const fs = require('fs');\n"
        "console.log(greeting.text, process.argv.slice(2).join(','), path.basename('/a/b.ts'), typeof fs.existsSync);\n"
    )
    result = ts_sandbox.process.code_run(code, params=CodeRunParams(argv=["one", "two"], env={"GREETING": "hello"}))
    assert result.exit_code == 0, result.result
    assert result.result == "hello one,two b.ts function\n"


def test_typescript_top_level_await(ts_sandbox):
    code = "const value: number = await Promise.resolve(7);\nconsole.log(value * 6);"
    result = ts_sandbox.process.code_run(code)
    assert result.exit_code == 0, result.result
    assert result.result == "42\n"


def test_typescript_errors(ts_sandbox):
    syntax = ts_sandbox.process.code_run("const x: number = ;")
    assert syntax.exit_code == 1
    assert "Unexpected" in syntax.result

    thrown = ts_sandbox.process.code_run("function fail(): never {\n  throw new Error('boom');\n}\nfail();")
    assert thrown.exit_code == 1
    assert "Error: boom" in thrown.result
    # Source maps point at the TypeScript line.
    assert ".ts:2:" in thrown.result


def test_typescript_runs_offline_and_fast(ts_sandbox):
    started = time.monotonic()
    result = ts_sandbox.process.code_run("const n: number = 1;\nconsole.log(n);")
    elapsed = time.monotonic() - started
    assert result.result == "1\n"
    assert elapsed < 5, f"TypeScript code_run took {elapsed:.1f} s"
    # Nothing was fetched: npx would leave its cache in the user's home.
    check = ts_sandbox.process.exec("test -e ~/.npm && echo fetched || echo offline")
    assert check.result.strip() == "offline"


def test_typescript_timeout(ts_sandbox):
    _assert_times_out(ts_sandbox, "const wait: number = 60000;\nsetTimeout(() => {}, wait);")
