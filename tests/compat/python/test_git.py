"""Git operations through the official SDK.

Sandboxes have no network but their own loopback, so the repositories are served from inside
the sandbox: anonymously by `git daemon`, and over HTTP with basic authentication by
`git http-backend` behind a small CGI server (tests/support/git_http_server.py).
"""

import os
import random
import time
import uuid

import pytest
from daytona import (
    DaytonaError,
    DaytonaGitAuthFailedError,
    DaytonaGitBranchExistsError,
    DaytonaGitBranchNotFoundError,
    DaytonaGitDirtyWorktreeError,
    DaytonaGitMergeConflictError,
    DaytonaGitPushRejectedError,
    DaytonaGitRepoNotFoundError,
    DaytonaGitTransportFailedError,
)

HOME = "/home/daytona"
SERVED = f"{HOME}/served"
# Credentials with the characters that break credentials embedded in a URL.
USERNAME = "user@example.com"
PASSWORD = "p@ss/w#rd"
SERVER_START_TIMEOUT = 30  # seconds

# A CGI server for `git http-backend` with basic authentication, run inside the sandbox.
GIT_HTTP_SERVER = os.path.join(os.path.dirname(__file__), "..", "..", "support", "git_http_server.py")


def sh(sandbox, command, cwd=None):
    """Runs a shell command in the sandbox and returns its output; fails the test on an error."""
    response = sandbox.process.exec(command, cwd=cwd, timeout=120)
    assert response.exit_code == 0, f"{command!r} failed: {response.result}"
    return response.result


def wait_until(sandbox, command):
    deadline = time.time() + SERVER_START_TIMEOUT
    while sandbox.process.exec(command, timeout=30).exit_code != 0:
        assert time.time() < deadline, f"timed out waiting for {command!r}"
        time.sleep(0.2)


class Servers:
    def __init__(self, daemon_port, http_port, first_commit):
        self.daemon_port = daemon_port
        self.http_port = http_port
        self.first_commit = first_commit

    def git_url(self, name="repo.git"):
        return f"git://127.0.0.1:{self.daemon_port}/{name}"

    def http_url(self, name="repo.git"):
        return f"http://127.0.0.1:{self.http_port}/{name}"


@pytest.fixture(scope="module")
def servers(sandbox):
    """A bare repository (main with two commits, feature with one more), served both ways."""
    seed = " && ".join(
        [
            "set -e",
            f"mkdir -p {SERVED}",
            f"git init -q --bare -b main {SERVED}/repo.git",
            f"git clone -q {SERVED}/repo.git /tmp/seed",
            "cd /tmp/seed",
            "git config user.name Seed && git config user.email seed@example.com",
            "echo one > README.md && git add . && git commit -q -m first",
            "echo two >> README.md && git commit -q -am second",
            "git switch -q -c feature && echo f > feature.txt && git add . && git commit -q -m feature",
            "git push -q origin main feature",
        ]
    )
    sh(sandbox, seed)
    first_commit = sh(sandbox, "git -C /tmp/seed rev-parse main~1").strip()

    daemon_port = random.randint(20000, 40000)
    sh(
        sandbox,
        f"nohup git daemon --export-all --enable=receive-pack --reuseaddr --listen=127.0.0.1 "
        f"--port={daemon_port} --base-path={SERVED} {SERVED} >/tmp/git-daemon.log 2>&1 &",
    )
    sandbox.fs.upload_file(GIT_HTTP_SERVER, f"{HOME}/git_http_server.py")
    sh(
        sandbox,
        f"nohup python3 {HOME}/git_http_server.py {SERVED} '{USERNAME}' '{PASSWORD}' "
        f"/tmp/git-http.port >/tmp/git-http.log 2>&1 &",
    )
    wait_until(sandbox, f"git ls-remote git://127.0.0.1:{daemon_port}/repo.git")
    wait_until(sandbox, "test -s /tmp/git-http.port")
    http_port = int(sh(sandbox, "cat /tmp/git-http.port"))
    return Servers(daemon_port, http_port, first_commit)


def fresh(name):
    return f"{HOME}/repos/{name}-{uuid.uuid4().hex[:8]}"


def advance_main(sandbox, servers, file, content):
    """Pushes a commit to main from another clone, so that the test's clones fall behind."""
    work = f"/tmp/other-{uuid.uuid4().hex[:8]}"
    sh(
        sandbox,
        f"git clone -q {SERVED}/repo.git {work} && cd {work} && "
        f"git config user.name Other && git config user.email other@example.com && "
        f"printf '{content}' > {file} && git add . && git commit -q -m 'change {file}' && "
        f"git push -q origin main",
    )


def test_clone_and_status(sandbox, servers):
    path = fresh("plain")
    sandbox.git.clone(servers.git_url(), path)
    assert sandbox.fs.download_file(f"{path}/README.md") == b"one\ntwo\n"
    status = sandbox.git.status(path)
    assert status.current_branch == "main"
    assert status.file_status == []
    assert status.ahead == 0
    assert status.behind == 0
    assert status.branch_published is True
    assert status.upstream == "origin/main"
    assert status.detached is False

    sandbox.fs.upload_file(b"changed\n", f"{path}/README.md")
    sandbox.fs.upload_file(b"new\n", f"{path}/new.txt")
    files = {file.name: file for file in sandbox.git.status(path).file_status}
    assert files["README.md"].worktree == "Modified"
    assert files["README.md"].staging == "Unmodified"
    assert files["new.txt"].worktree == "Untracked"


def test_clone_branch_with_depth(sandbox, servers):
    path = fresh("shallow")
    sandbox.git.clone(servers.git_url(), path, branch="feature", depth=1)
    assert sandbox.git.status(path).current_branch == "feature"
    assert sh(sandbox, f"git -C {path} rev-list --count HEAD").strip() == "1"


def test_clone_commit_id_detaches_head(sandbox, servers):
    path = fresh("commit")
    sandbox.git.clone(servers.git_url(), path, commit_id=servers.first_commit)
    assert sh(sandbox, f"git -C {path} rev-parse HEAD").strip() == servers.first_commit
    status = sandbox.git.status(path)
    assert status.detached is True
    assert sandbox.fs.download_file(f"{path}/README.md") == b"one\n"


def test_clone_credentials_with_reserved_characters(sandbox, servers):
    """Credentials with `@`, `/` and `#` work and are never stored; wrong ones are an
    authentication failure, distinct from a missing repository."""
    path = fresh("private")
    sandbox.git.clone(servers.http_url(), path, username=USERNAME, password=PASSWORD)
    assert sandbox.fs.download_file(f"{path}/README.md") == b"one\ntwo\n"
    config = sandbox.fs.download_file(f"{path}/.git/config").decode()
    assert PASSWORD not in config
    assert USERNAME not in config
    assert servers.http_url() in config
    assert sandbox.process.exec(f"test -e {HOME}/.git-credentials").exit_code != 0

    with pytest.raises(DaytonaGitAuthFailedError):
        sandbox.git.clone(servers.http_url(), fresh("wrong"), username=USERNAME, password="wrong")
    with pytest.raises(DaytonaGitAuthFailedError):
        sandbox.git.clone(servers.http_url(), fresh("anonymous"))
    with pytest.raises(DaytonaGitRepoNotFoundError):
        sandbox.git.clone(
            servers.http_url("missing.git"), fresh("missing"), username=USERNAME, password=PASSWORD
        )


def test_clone_failures(sandbox, servers):
    with pytest.raises(DaytonaGitRepoNotFoundError):
        sandbox.git.clone(servers.git_url("missing.git"), fresh("missing"))
    with pytest.raises(DaytonaGitBranchNotFoundError):
        sandbox.git.clone(servers.git_url(), fresh("branch"), branch="no-such-branch")
    with pytest.raises(DaytonaGitTransportFailedError):
        sandbox.git.clone("http://127.0.0.1:9/repo.git", fresh("unreachable"))


def test_branches_create_checkout_delete(sandbox, servers):
    path = fresh("branches")
    sandbox.git.clone(servers.git_url(), path)
    listed = sandbox.git.branches(path)
    assert listed.branches == ["main"]
    assert listed.current == "main"

    sandbox.git.create_branch(path, "topic")
    listed = sandbox.git.branches(path)
    assert listed.branches == ["main", "topic"]
    assert listed.current == "topic"
    with pytest.raises(DaytonaGitBranchExistsError):
        sandbox.git.create_branch(path, "topic")

    sandbox.git.checkout_branch(path, "feature")
    assert sandbox.git.status(path).current_branch == "feature"
    with pytest.raises(DaytonaGitBranchNotFoundError):
        sandbox.git.checkout_branch(path, "no-such-branch")

    sandbox.git.delete_branch(path, "topic")
    assert "topic" not in sandbox.git.branches(path).branches
    with pytest.raises(DaytonaGitBranchNotFoundError):
        sandbox.git.delete_branch(path, "topic")


def test_add_commit_push(sandbox, servers):
    path = fresh("push")
    sandbox.git.clone(servers.git_url(), path)
    sandbox.fs.upload_file(b"pushed\n", f"{path}/pushed.txt")
    sandbox.git.add(path, ["pushed.txt"])
    staged = {file.name: file for file in sandbox.git.status(path).file_status}
    assert staged["pushed.txt"].staging == "Added"

    response = sandbox.git.commit(path, "add pushed.txt", "Ann Author", "ann@example.com")
    assert response.sha == sh(sandbox, f"git -C {path} rev-parse HEAD").strip()
    assert (
        sh(sandbox, f"git -C {path} log -1 --format='%an <%ae>'").strip()
        == "Ann Author <ann@example.com>"
    )
    assert sandbox.git.status(path).ahead == 1
    empty = sandbox.git.commit(path, "empty", "Ann Author", "ann@example.com", allow_empty=True)
    assert empty.sha != response.sha
    with pytest.raises(DaytonaError):
        sandbox.git.commit(path, "nothing staged", "Ann Author", "ann@example.com")

    sandbox.git.push(path)
    assert sh(sandbox, f"git -C {SERVED}/repo.git rev-parse main").strip() == empty.sha

    # A branch pushed with set_upstream tracks the remote branch.
    sandbox.git.create_branch(path, f"pushed-{uuid.uuid4().hex[:6]}")
    sandbox.git.push(path, set_upstream=True)
    assert sandbox.git.status(path).upstream.startswith("origin/pushed-")


def test_push_rejected_when_remote_moved(sandbox, servers):
    path = fresh("rejected")
    sandbox.git.clone(servers.git_url(), path)
    sandbox.fs.upload_file(b"local\n", f"{path}/local-{uuid.uuid4().hex[:6]}.txt")
    sandbox.git.add(path, ["."])
    sandbox.git.commit(path, "local", "Ann Author", "ann@example.com")
    advance_main(sandbox, servers, f"remote-{uuid.uuid4().hex[:6]}.txt", "r\\n")
    with pytest.raises(DaytonaGitPushRejectedError):
        sandbox.git.push(path, branch="main", remote="origin")


def test_pull_fast_forward_dirty_and_conflict(sandbox, servers):
    sandbox.git.configure_user("Puller", "puller@example.com")
    path = fresh("pull")
    sandbox.git.clone(servers.git_url(), path)

    marker = f"pulled-{uuid.uuid4().hex[:6]}.txt"
    advance_main(sandbox, servers, marker, "p\\n")
    sandbox.git.pull(path)
    assert sandbox.fs.get_file_info(f"{path}/{marker}").size == 2

    conflict = f"conflict-{uuid.uuid4().hex[:6]}.txt"
    advance_main(sandbox, servers, conflict, "remote\\n")
    sandbox.fs.upload_file(b"local, uncommitted\n", f"{path}/{conflict}")
    with pytest.raises(DaytonaGitDirtyWorktreeError):
        sandbox.git.pull(path)

    sandbox.git.add(path, [conflict])
    sandbox.git.commit(path, "local version", "Ann Author", "ann@example.com")
    with pytest.raises(DaytonaGitMergeConflictError):
        sandbox.git.pull(path, remote="origin", branch="main")
    files = {file.name: file for file in sandbox.git.status(path).file_status}
    assert files[conflict].staging == "Updated but unmerged"


def test_push_and_pull_with_credentials(sandbox, servers):
    path = fresh("http")
    sandbox.git.clone(servers.http_url(), path, username=USERNAME, password=PASSWORD)
    sandbox.fs.upload_file(b"over http\n", f"{path}/http-{uuid.uuid4().hex[:6]}.txt")
    sandbox.git.add(path, ["."])
    commit = sandbox.git.commit(path, "over http", "Ann Author", "ann@example.com")
    with pytest.raises(DaytonaGitAuthFailedError):
        sandbox.git.push(path)
    sandbox.git.push(path, username=USERNAME, password=PASSWORD)
    assert sh(sandbox, f"git -C {SERVED}/repo.git rev-parse main").strip() == commit.sha
    sandbox.git.pull(path, username=USERNAME, password=PASSWORD)


def test_init_reset_restore(sandbox):
    path = fresh("local")
    sandbox.git.init(path, initial_branch="trunk")
    assert sandbox.git.branches(path).current == "trunk"
    sandbox.fs.upload_file(b"v1\n", f"{path}/file.txt")
    sandbox.git.add(path, ["."])
    first = sandbox.git.commit(path, "v1", "Ann Author", "ann@example.com")
    sandbox.fs.upload_file(b"v2\n", f"{path}/file.txt")
    sandbox.git.add(path, ["file.txt"])
    sandbox.git.commit(path, "v2", "Ann Author", "ann@example.com")

    # restore: the working tree from the index, the index from HEAD, a file from a revision.
    sandbox.fs.upload_file(b"scribble\n", f"{path}/file.txt")
    sandbox.git.restore(path, ["file.txt"])
    assert sandbox.fs.download_file(f"{path}/file.txt") == b"v2\n"
    sandbox.fs.upload_file(b"staged\n", f"{path}/file.txt")
    sandbox.git.add(path, ["file.txt"])
    sandbox.git.restore(path, ["file.txt"], staged=True)
    entry = sandbox.git.status(path).file_status[0]
    assert entry.staging == "Unmodified"
    assert entry.worktree == "Modified"
    sandbox.git.restore(path, ["file.txt"], source=first.sha)
    assert sandbox.fs.download_file(f"{path}/file.txt") == b"v1\n"

    # reset: mixed (unstage), soft to the first commit, then hard.
    sandbox.git.add(path, ["file.txt"])
    sandbox.git.reset(path)
    assert sandbox.git.status(path).file_status[0].staging == "Unmodified"
    sandbox.git.reset(path, mode="soft", target="HEAD~1")
    assert sh(sandbox, f"git -C {path} rev-parse HEAD").strip() == first.sha
    sandbox.git.reset(path, mode="hard")
    assert sandbox.fs.download_file(f"{path}/file.txt") == b"v1\n"
    assert sandbox.git.status(path).file_status == []

    bare = fresh("bare") + ".git"
    sandbox.git.init(bare, bare=True)
    assert sandbox.fs.get_file_info(f"{bare}/HEAD").size > 0


def test_remotes(sandbox, servers):
    path = fresh("remotes")
    sandbox.git.init(path)
    assert sandbox.git.remotes(path).remotes == []
    sandbox.git.remote_add(path, "origin", servers.git_url(), fetch=True)
    assert "origin/main" in sh(sandbox, f"git -C {path} branch -r")
    with pytest.raises(DaytonaError):
        sandbox.git.remote_add(path, "origin", "/elsewhere.git")
    sandbox.git.remote_add(path, "origin", "/elsewhere.git", overwrite=True)
    sandbox.git.remote_add(path, "backup", "https://me:secret@git.example.com/r.git")

    remotes = {remote.name: remote.url for remote in sandbox.git.remotes(path).remotes}
    assert remotes == {"origin": "/elsewhere.git", "backup": "https://me:***@git.example.com/r.git"}
    assert sandbox.git.remote_get(path, "origin") == "/elsewhere.git"
    assert sandbox.git.remote_get(path, "nothing") is None


def test_config_and_configure_user(sandbox):
    key = f"daytona-test.k{uuid.uuid4().hex[:6]}"
    assert sandbox.git.get_config(key) is None
    sandbox.git.set_config(key, "global value")
    assert sandbox.git.get_config(key) == "global value"
    assert sandbox.git.get_config(key, scope="global") == "global value"

    path = fresh("config")
    sandbox.git.init(path)
    sandbox.git.set_config(key, "local value", scope="local", path=path)
    assert sandbox.git.get_config(key, scope="local", path=path) == "local value"
    assert sandbox.git.get_config(key) == "global value"

    sandbox.git.configure_user("Local Person", "local@example.com", scope="local", path=path)
    assert sandbox.git.get_config("user.name", scope="local", path=path) == "Local Person"
    sandbox.git.commit(path, "identity from config", "", "", allow_empty=True)
    assert sh(sandbox, f"git -C {path} log -1 --format=%an").strip() == "Local Person"

    sandbox.git.configure_user("Global Person", "global@example.com")
    assert sandbox.git.get_config("user.email") == "global@example.com"
    with pytest.raises(DaytonaError):
        sandbox.git.set_config("a.b", "c", scope="local")


def test_dangerously_authenticate_serves_later_clones(sandbox, servers):
    sandbox.git.dangerously_authenticate(
        USERNAME, PASSWORD, host=f"127.0.0.1:{servers.http_port}", protocol="http"
    )
    try:
        path = fresh("stored")
        sandbox.git.clone(servers.http_url(), path)
        assert sandbox.fs.download_file(f"{path}/README.md") == b"one\ntwo\n"
    finally:
        sh(sandbox, f"rm -f {HOME}/.git-credentials && git config --global --unset-all credential.helper || true")
