"""Interpreter worker of one code interpreter context, started by the Daytona toolbox server.

Standard input is a socket to the server, which sends one JSON line per run:
{"code": "...", "envs": {...}}. The worker replies on the same socket with JSON lines:
{"type": "ready"} once at start, then for each run an optional
{"type": "error", "name", "value", "traceback"} and a final
{"type": "control", "text": "completed" | "interrupted"}.

Standard output and standard error are pipes that the server reads directly, so that output
of child processes reaches the client as well. Every run shares one namespace, which is what
keeps variables, imports and functions between runs. SIGINT interrupts a run with
KeyboardInterrupt; between runs it is ignored.
"""

import ast
import json
import linecache
import os
import signal
import sys
import traceback

# Maximum length of an exception message or traceback sent, in characters. The server rejects
# lines over 8 MiB.
MAX_ERROR_TEXT = 256 * 1024


# Sources of this many recent cells stay registered for tracebacks.
KEPT_CELLS = 1000


class _State:
    running = False
    run_count = 0


def _on_sigint(signum, frame):
    if _State.running:
        raise KeyboardInterrupt


def _send(control_fd, message):
    data = (json.dumps(message) + "\n").encode("utf-8")
    view = memoryview(data)
    while view:
        written = os.write(control_fd, view)
        view = view[written:]


def _truncate(text):
    if len(text) <= MAX_ERROR_TEXT:
        return text
    return text[:MAX_ERROR_TEXT] + "\n[truncated %d characters]" % (len(text) - MAX_ERROR_TEXT)


def _cell_name():
    _State.run_count += 1
    return "<cell-%d>" % _State.run_count


def _format_error(error):
    """Formats an exception like the interactive interpreter, without this file's frames."""
    frames = traceback.extract_tb(error.__traceback__)
    user_frames = [frame for frame in frames if frame.filename != __file__]
    lines = ["Traceback (most recent call last):\n"] if user_frames else []
    lines += traceback.format_list(user_frames)
    lines += traceback.format_exception_only(type(error), error)
    value = str(error)
    if isinstance(error, SyntaxError):
        value = error.msg or value
    return {
        "type": "error",
        "name": type(error).__name__,
        "value": _truncate(value),
        "traceback": _truncate("".join(lines)),
    }


def _apply_envs(envs):
    """Sets the run's variables and returns what to restore afterwards."""
    saved = {}
    for name, value in (envs or {}).items():
        saved[name] = os.environ.get(name)
        os.environ[name] = value
    return saved


def _restore_envs(saved):
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _run(request, namespace):
    """Runs one request and returns the messages that end it."""
    code = request.get("code", "")
    cell = _cell_name()
    # Registering the source lets tracebacks show the lines of the cell.
    linecache.cache[cell] = (len(code), None, code.splitlines(True), cell)
    linecache.cache.pop("<cell-%d>" % (_State.run_count - KEPT_CELLS), None)
    saved_envs = _apply_envs(request.get("envs"))
    messages = []
    try:
        try:
            tree = compile(code, cell, "exec", ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            compiled = compile(tree, cell, "exec", ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            _State.running = True
            try:
                result = eval(compiled, namespace)
                # Code with a top-level await compiles to a coroutine.
                if compiled.co_flags & 0x80:
                    import asyncio

                    asyncio.run(result)
            finally:
                _State.running = False
        except KeyboardInterrupt:
            messages.append({"type": "control", "text": "interrupted"})
            return messages
        except BaseException as error:  # noqa: BLE001 - the user's error is the result
            messages.append(_format_error(error))
        messages.append({"type": "control", "text": "completed"})
        return messages
    finally:
        # An interrupt that lands inside the inner `finally` skips its assignment.
        _State.running = False
        _restore_envs(saved_envs)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a closed stream must not end the worker
                pass


def main():
    signal.signal(signal.SIGINT, _on_sigint)

    # The control socket moves to a descriptor that child processes do not inherit, and
    # standard input becomes /dev/null, so that user code cannot read the protocol.
    control_fd = os.dup(0)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_fd, 0)
    os.close(null_fd)
    sys.stdin = open(0, "r", closefd=False)
    control = open(control_fd, "rb", closefd=False)

    # Imports resolve against the working directory, as in an interactive interpreter, not
    # against this file's directory.
    if sys.path and os.path.dirname(os.path.abspath(__file__)) == os.path.abspath(sys.path[0]):
        sys.path[0] = ""

    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    _send(control_fd, {"type": "ready"})
    while True:
        try:
            line = control.readline()
        except KeyboardInterrupt:
            continue
        if not line:
            # The toolbox server closed its end: it stopped or deleted the context.
            return
        try:
            request = json.loads(line)
        except ValueError:
            continue
        for message in _run(request, namespace):
            _send(control_fd, message)


if __name__ == "__main__":
    main()
