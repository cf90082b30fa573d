"""File operations beyond upload and download, through the official SDK: move, permissions,
find, search, replace, recursive listing, streamed transfers and large parallel uploads."""

import hashlib
import io
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from daytona import DaytonaError, DaytonaNotFoundError

HOME = "/home/daytona"
# Size of each upload of the parallel large-upload case, and how many run at once.
LARGE_UPLOAD_BYTES = 200 * 1024 * 1024
LARGE_UPLOADS = 3
# A large upload that takes longer than this is treated as hung.
LARGE_UPLOAD_TIMEOUT = 300  # seconds


def fresh_dir(sandbox, name):
    path = f"{HOME}/fs-{name}-{uuid.uuid4().hex[:8]}"
    sandbox.fs.create_folder(path, "755")
    return path


def sh(sandbox, command):
    response = sandbox.process.exec(command, timeout=120)
    assert response.exit_code == 0, f"{command!r} failed: {response.result}"
    return response.result


def test_move_files(sandbox):
    base = fresh_dir(sandbox, "move")
    sandbox.fs.upload_file(b"a", f"{base}/a.txt")
    sandbox.fs.move_files(f"{base}/a.txt", f"{base}/b.txt")
    assert sandbox.fs.download_file(f"{base}/b.txt") == b"a"
    with pytest.raises(DaytonaNotFoundError):
        sandbox.fs.get_file_info(f"{base}/a.txt")

    sandbox.fs.upload_file(b"inner", f"{base}/dir/inner.txt")
    sandbox.fs.move_files(f"{base}/dir", f"{base}/moved")
    assert sandbox.fs.download_file(f"{base}/moved/inner.txt") == b"inner"

    sandbox.fs.upload_file(b"taken", f"{base}/taken.txt")
    with pytest.raises(DaytonaError) as raised:
        sandbox.fs.move_files(f"{base}/b.txt", f"{base}/taken.txt")
    assert raised.value.status_code == 409
    assert sandbox.fs.download_file(f"{base}/taken.txt") == b"taken"
    with pytest.raises(DaytonaNotFoundError):
        sandbox.fs.move_files(f"{base}/none", f"{base}/x")


def test_set_file_permissions(sandbox):
    base = fresh_dir(sandbox, "perm")
    path = f"{base}/script.sh"
    sandbox.fs.upload_file(b"#!/bin/sh\necho ran\n", path)
    sandbox.fs.set_file_permissions(path, mode="755")
    assert sandbox.fs.get_file_info(path).permissions == "0755"
    assert sandbox.process.exec(path).result == "ran\n"

    sandbox.fs.set_file_permissions(path, owner="root", group="root")
    info = sandbox.fs.get_file_info(path)
    assert (info.owner, info.group) == ("0", "0")
    sandbox.fs.set_file_permissions(path, owner="daytona", group="1000")
    info = sandbox.fs.get_file_info(path)
    assert (info.owner, info.group) == ("1000", "1000")

    with pytest.raises(DaytonaError):
        sandbox.fs.set_file_permissions(path, owner="no-such-user")
    with pytest.raises(DaytonaNotFoundError):
        sandbox.fs.set_file_permissions(f"{base}/none", mode="600")


def project(sandbox):
    base = fresh_dir(sandbox, "proj")
    sandbox.fs.upload_file(b"import os\n# TODO: first\n", f"{base}/src/main.py")
    sandbox.fs.upload_file(b"def f():\n    pass  # TODO: second\n", f"{base}/src/util/helpers.py")
    sandbox.fs.upload_file(b"// TODO: vendored\n", f"{base}/node_modules/pkg/index.js")
    sandbox.fs.upload_file(b"TODO: git data\n", f"{base}/.git/config")
    sandbox.fs.upload_file(b"TODO\0binary", f"{base}/src/blob.bin")
    return base


def test_find_files(sandbox):
    base = project(sandbox)
    matches = sandbox.fs.find_files(base, "TODO:")
    assert [(m.file, m.line, m.content) for m in matches] == [
        (f"{base}/src/main.py", 2, "# TODO: first"),
        (f"{base}/src/util/helpers.py", 2, "    pass  # TODO: second"),
    ]
    assert sandbox.fs.find_files(f"{base}/src/main.py", "import")[0].line == 1
    assert sandbox.fs.find_files(base, "no such text") == []


def test_search_files(sandbox):
    base = project(sandbox)
    assert sandbox.fs.search_files(base, "*.py").files == [
        f"{base}/src/main.py",
        f"{base}/src/util/helpers.py",
    ]
    assert sandbox.fs.search_files(base, "src/*.py").files == [f"{base}/src/main.py"]
    assert sandbox.fs.search_files(base, "util").files == [f"{base}/src/util"]
    assert sandbox.fs.search_files(base, "*.js").files == []


def test_replace_in_files(sandbox):
    base = fresh_dir(sandbox, "replace")
    sandbox.fs.upload_file(b"old and old\n", f"{base}/a.txt")
    sandbox.fs.upload_file(b"echo old\n", f"{base}/run.sh")
    sandbox.fs.set_file_permissions(f"{base}/run.sh", mode="750")

    results = sandbox.fs.replace_in_files(
        [f"{base}/a.txt", f"{base}/run.sh", f"{base}/missing.txt"], "old", "new"
    )
    by_file = {result.file: result for result in results}
    assert by_file[f"{base}/a.txt"].success is True
    assert by_file[f"{base}/run.sh"].success is True
    assert by_file[f"{base}/missing.txt"].success is False
    assert by_file[f"{base}/missing.txt"].error
    assert sandbox.fs.download_file(f"{base}/a.txt") == b"new and new\n"
    info = sandbox.fs.get_file_info(f"{base}/run.sh")
    assert info.permissions == "0750"
    assert info.owner == "1000"


def test_list_files_with_depth(sandbox):
    base = fresh_dir(sandbox, "tree")
    sandbox.fs.upload_file(b"d", f"{base}/a/b/deep.txt")
    sandbox.fs.upload_file(b"t", f"{base}/top.txt")
    assert [f.name for f in sandbox.fs.list_files(base)] == ["a", "top.txt"]
    assert [f.path for f in sandbox.fs.list_files(base, depth=2)] == [
        f"{base}/a",
        f"{base}/a/b",
        f"{base}/top.txt",
    ]
    deep = sandbox.fs.list_files(base, depth=3)
    assert [f.path for f in deep] == [
        f"{base}/a",
        f"{base}/a/b",
        f"{base}/a/b/deep.txt",
        f"{base}/top.txt",
    ]
    assert deep[2].size == 1


def test_streamed_upload_and_download_report_progress(sandbox):
    data = os.urandom(3 * 1024 * 1024 + 17)
    path = f"{HOME}/streamed.bin"
    sent = []
    sandbox.fs.upload_file_stream(io.BytesIO(data), path, on_progress=lambda p: sent.append(p.bytes_sent))
    assert sent and sent[-1] == len(data)

    received = []
    chunks = sandbox.fs.download_file_stream(path, on_progress=received.append)
    back = b"".join(chunks)
    assert hashlib.sha256(back).hexdigest() == hashlib.sha256(data).hexdigest()
    assert received[-1].bytes_received == len(data)
    assert received[-1].total_bytes == len(data)

    cancel = threading.Event()
    cancel.set()
    with pytest.raises(DaytonaError):
        sandbox.fs.upload_file_stream(b"never", f"{HOME}/cancelled.bin", cancel_event=cancel)


def test_large_uploads_in_parallel_do_not_hang(sandbox):
    """Several 200 MiB uploads at once all finish, each byte-exact."""
    payloads = [os.urandom(LARGE_UPLOAD_BYTES) for _ in range(LARGE_UPLOADS)]
    paths = [f"{HOME}/big-{index}.bin" for index in range(LARGE_UPLOADS)]

    def upload(index):
        started = time.monotonic()
        sandbox.fs.upload_file(payloads[index], paths[index], timeout=LARGE_UPLOAD_TIMEOUT)
        return time.monotonic() - started

    try:
        with ThreadPoolExecutor(max_workers=LARGE_UPLOADS) as pool:
            durations = list(pool.map(upload, range(LARGE_UPLOADS)))
        for duration in durations:
            assert duration < LARGE_UPLOAD_TIMEOUT
        sums = sh(sandbox, "sha256sum " + " ".join(paths)).split("\n")
        for payload, line in zip(payloads, sums):
            assert line.split()[0] == hashlib.sha256(payload).hexdigest()
    finally:
        sandbox.process.exec("rm -f " + " ".join(paths))
