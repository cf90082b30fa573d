"""`sandbox.create_lsp_server` through the official SDK, with pylsp and typescript-language-server."""

import pytest
from daytona import DaytonaLspServerNotInitializedError, LspCompletionPosition

PYTHON_PROJECT = "/home/daytona/lsp-python"
PYTHON_SOURCE = """import os

class Greeter:
    def greet(self, name):
        return 'hi ' + name

def helper_function(x):
    return x * 2

value = helper_function(3)
os.pa
"""

TYPESCRIPT_PROJECT = "/home/daytona/lsp-typescript"
TYPESCRIPT_SOURCE = """export interface Point { x: number; y: number }
export class Shape { area(): number { return 0 } }
export function distance(a: Point, b: Point): number { return Math.hypot(a.x - b.x, a.y - b.y) }
const p: Point = { x: 1, y: 2 };
p.
"""


@pytest.fixture(scope="module")
def python_lsp(sandbox):
    sandbox.fs.create_folder(PYTHON_PROJECT, "755")
    sandbox.fs.upload_file(PYTHON_SOURCE.encode(), f"{PYTHON_PROJECT}/main.py")
    server = sandbox.create_lsp_server("python", PYTHON_PROJECT)
    server.start()
    yield server
    try:
        server.stop()
    except Exception:  # noqa: BLE001 - a test may have stopped it
        pass


@pytest.fixture(scope="module")
def typescript_lsp(sandbox):
    sandbox.fs.create_folder(TYPESCRIPT_PROJECT, "755")
    sandbox.fs.upload_file(TYPESCRIPT_SOURCE.encode(), f"{TYPESCRIPT_PROJECT}/index.ts")
    server = sandbox.create_lsp_server("typescript", TYPESCRIPT_PROJECT)
    server.start()
    yield server
    try:
        server.stop()
    except Exception:  # noqa: BLE001 - a test may have stopped it
        pass


def _names(symbols):
    return [symbol.name for symbol in symbols]


def test_requests_before_start_raise(sandbox):
    sandbox.fs.create_folder("/home/daytona/lsp-unstarted", "755")
    server = sandbox.create_lsp_server("python", "/home/daytona/lsp-unstarted")
    with pytest.raises(DaytonaLspServerNotInitializedError):
        server.document_symbols("/home/daytona/lsp-unstarted/main.py")
    with pytest.raises(DaytonaLspServerNotInitializedError):
        server.completions("/home/daytona/lsp-unstarted/main.py", LspCompletionPosition(line=0, character=0))


def test_python_server_is_pylsp(sandbox, python_lsp):
    processes = sandbox.process.exec("ps -eo user,args").result
    servers = [line for line in processes.splitlines() if "pylsp" in line]
    assert servers, processes
    assert all(line.split()[0] == "daytona" for line in servers), servers
    assert "typescript-language-server" not in processes


def test_python_document_symbols(python_lsp):
    python_lsp.did_open(f"{PYTHON_PROJECT}/main.py")
    symbols = python_lsp.document_symbols(f"{PYTHON_PROJECT}/main.py")
    names = _names(symbols)
    for expected in ["Greeter", "greet", "helper_function", "value"]:
        assert expected in names, names
    helper = next(symbol for symbol in symbols if symbol.name == "helper_function")
    assert helper.kind == 12
    assert helper.location.uri == f"file://{PYTHON_PROJECT}/main.py"
    assert helper.location.range.start.line == 6


def test_python_sandbox_symbols(python_lsp):
    python_lsp.did_open(f"{PYTHON_PROJECT}/main.py")
    assert _names(python_lsp.sandbox_symbols("helper")) == ["helper_function"]
    assert _names(python_lsp.sandbox_symbols("GREET")) == ["Greeter", "greet"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_python_workspace_symbols_alias(python_lsp):
    python_lsp.did_open(f"{PYTHON_PROJECT}/main.py")
    assert _names(python_lsp.workspace_symbols("helper")) == ["helper_function"]


def test_python_completions(python_lsp):
    python_lsp.did_open(f"{PYTHON_PROJECT}/main.py")
    completions = python_lsp.completions(f"{PYTHON_PROJECT}/main.py", LspCompletionPosition(line=10, character=5))
    assert isinstance(completions.is_incomplete, bool)
    labels = [item.label for item in completions.items]
    assert "path" in labels, labels
    for item in completions.items:
        assert item.documentation is None or isinstance(item.documentation, dict)


def test_python_did_close_and_stop(sandbox):
    sandbox.fs.create_folder("/home/daytona/lsp-stop", "755")
    sandbox.fs.upload_file(b"def only():\n    pass\n", "/home/daytona/lsp-stop/a.py")
    server = sandbox.create_lsp_server("python", "/home/daytona/lsp-stop")
    server.start()
    server.did_open("/home/daytona/lsp-stop/a.py")
    server.did_close("/home/daytona/lsp-stop/a.py")
    server.stop()
    with pytest.raises(DaytonaLspServerNotInitializedError):
        server.document_symbols("/home/daytona/lsp-stop/a.py")


def test_typescript_server_is_separate(sandbox, typescript_lsp):
    processes = sandbox.process.exec("ps -eo user,args").result
    servers = [line for line in processes.splitlines() if "typescript-language-server" in line]
    assert servers, processes
    assert all(line.split()[0] == "daytona" for line in servers), servers


def test_typescript_document_symbols(typescript_lsp):
    typescript_lsp.did_open(f"{TYPESCRIPT_PROJECT}/index.ts")
    names = _names(typescript_lsp.document_symbols(f"{TYPESCRIPT_PROJECT}/index.ts"))
    for expected in ["Point", "Shape", "area", "distance", "p"]:
        assert expected in names, names


def test_typescript_sandbox_symbols(typescript_lsp):
    typescript_lsp.did_open(f"{TYPESCRIPT_PROJECT}/index.ts")
    assert "distance" in _names(typescript_lsp.sandbox_symbols("dist"))


def test_typescript_completions(typescript_lsp):
    typescript_lsp.did_open(f"{TYPESCRIPT_PROJECT}/index.ts")
    completions = typescript_lsp.completions(f"{TYPESCRIPT_PROJECT}/index.ts", LspCompletionPosition(line=4, character=2))
    labels = [item.label for item in completions.items]
    assert "x" in labels, labels
    assert "y" in labels, labels


def test_typescript_did_close_and_stop(sandbox):
    sandbox.fs.create_folder("/home/daytona/lsp-ts-stop", "755")
    sandbox.fs.upload_file(b"export const answer: number = 42;\n", "/home/daytona/lsp-ts-stop/a.ts")
    server = sandbox.create_lsp_server("typescript", "/home/daytona/lsp-ts-stop")
    server.start()
    server.did_open("/home/daytona/lsp-ts-stop/a.ts")
    assert "answer" in _names(server.document_symbols("/home/daytona/lsp-ts-stop/a.ts"))
    server.did_close("/home/daytona/lsp-ts-stop/a.ts")
    server.stop()
    with pytest.raises(DaytonaLspServerNotInitializedError):
        server.document_symbols("/home/daytona/lsp-ts-stop/a.ts")
