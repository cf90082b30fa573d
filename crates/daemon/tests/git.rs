//! `/git/*`, against repositories the tests create on this machine: bare repositories served
//! from a local path, and one served over HTTP with basic authentication by `git http-backend`
//! behind a CGI server on loopback. Nothing contacts another host.

mod common;
mod git_http;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Daemon, assert_error_shape, full, which};
use git_http::GitHttpServer;
use hyper::Method;
use serde_json::{Value, json};

/// A user name and a password with the characters that break URL-embedded credentials.
const USERNAME: &str = "user@example.com";
const PASSWORD: &str = "p@ss/w#rd:x";

/// Runs git for the test's own setup, without the machine's configuration and with a fixed
/// identity.
fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Setup")
        .env("GIT_AUTHOR_EMAIL", "setup@example.com")
        .env("GIT_COMMITTER_NAME", "Setup")
        .env("GIT_COMMITTER_EMAIL", "setup@example.com")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Whether git is installed; tests that need it print SKIPPED and return otherwise.
fn have_git() -> bool {
    if which("git").is_some() {
        return true;
    }
    eprintln!("SKIPPED: git is not installed");
    false
}

/// A bare repository with two commits on `main` and one more on `feature`.
struct Remote {
    _dir: tempfile::TempDir,
    /// The directory that contains the bare repository (the HTTP server's root).
    root: PathBuf,
    bare: PathBuf,
    first_commit: String,
}

impl Remote {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("served");
        std::fs::create_dir(&root).unwrap();
        let bare = root.join("repo.git");
        git(
            dir.path(),
            &[
                "init",
                "--quiet",
                "--bare",
                "-b",
                "main",
                bare.to_str().unwrap(),
            ],
        );

        let work = dir.path().join("seed");
        git(
            dir.path(),
            &["clone", "--quiet", bare.to_str().unwrap(), "seed"],
        );
        std::fs::write(work.join("README.md"), "one\n").unwrap();
        git(&work, &["add", "."]);
        git(&work, &["commit", "--quiet", "-m", "first"]);
        let first_commit = git(&work, &["rev-parse", "HEAD"]).trim().to_owned();
        std::fs::write(work.join("README.md"), "one\ntwo\n").unwrap();
        git(&work, &["commit", "--quiet", "-am", "second"]);
        git(&work, &["switch", "--quiet", "-c", "feature"]);
        std::fs::write(work.join("feature.txt"), "feature\n").unwrap();
        git(&work, &["add", "."]);
        git(&work, &["commit", "--quiet", "-m", "feature work"]);
        git(&work, &["push", "--quiet", "origin", "main", "feature"]);
        Self {
            _dir: dir,
            root,
            bare,
            first_commit,
        }
    }

    fn url(&self) -> String {
        self.bare.display().to_string()
    }

    /// Adds a commit to `main` from another clone, so that clones of the test fall behind.
    fn advance_main(&self, file: &str, content: &str) {
        let work = self._dir.path().join(format!("other-{file}"));
        git(
            self._dir.path(),
            &["clone", "--quiet", &self.url(), work.to_str().unwrap()],
        );
        std::fs::write(work.join(file), content).unwrap();
        git(&work, &["add", "."]);
        git(
            &work,
            &["commit", "--quiet", "-m", &format!("change {file}")],
        );
        git(&work, &["push", "--quiet", "origin", "main"]);
    }

    fn head_of(&self, branch: &str) -> String {
        git(&self.bare, &["rev-parse", branch]).trim().to_owned()
    }
}

async fn post(daemon: &Daemon, path: &str, body: Value) -> common::Reply {
    daemon.post_json(path, &body).await
}

async fn expect_status(daemon: &Daemon, path: &str, body: Value, status: u16) -> common::Reply {
    let reply = post(daemon, path, body).await;
    assert_eq!(reply.status.as_u16(), status, "{path}: {}", reply.text());
    reply
}

async fn clone(daemon: &Daemon, remote: &Remote, path: &str) {
    expect_status(
        daemon,
        "/git/clone",
        json!({"url": remote.url(), "path": path}),
        200,
    )
    .await;
}

async fn status(daemon: &Daemon, path: &str) -> Value {
    let reply = daemon.get(&format!("/git/status?path={path}")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

async fn branches(daemon: &Daemon, path: &str) -> Value {
    let reply = daemon.get(&format!("/git/branches?path={path}")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

async fn commit(daemon: &Daemon, path: &str, message: &str) -> String {
    let reply = expect_status(
        daemon,
        "/git/commit",
        json!({"path": path, "message": message, "author": "Ann Author", "email": "ann@example.com"}),
        200,
    )
    .await;
    reply.json()["hash"].as_str().unwrap().to_owned()
}

/// Sets the identity that merge commits of pulls use.
async fn configure_user(daemon: &Daemon) {
    expect_status(
        daemon,
        "/git/config/user",
        json!({"name": "Merger", "email": "merger@example.com"}),
        200,
    )
    .await;
}

async fn delete_branch(daemon: &Daemon, path: &str, name: &str) -> common::Reply {
    let body = json!({"path": path, "name": name}).to_string();
    daemon
        .send(Method::DELETE, "/git/branches", full(body))
        .await
}

#[tokio::test]
async fn clone_checks_out_the_default_branch() {
    if !have_git() {
        return;
    }
    let remote = Remote::new();
    let daemon = Daemon::start().await;
    clone(&daemon, &remote, "repo").await;

    let repo = daemon.home.join("repo");
    assert_eq!(
        std::fs::read_to_string(repo.join("README.md")).unwrap(),
        "one\ntwo\n"
    );
    let status = status(&daemon, "repo").await;
    assert_eq!(status["currentBranch"], "main");
    assert_eq!(status["fileStatus"], json!([]));
    assert_eq!(status["upstream"], "origin/main");
    assert_eq!(status["branchPublished"], true);
    assert_eq!(status["ahead"], 0);
    assert_eq!(status["behind"], 0);
    assert_eq!(status["detached"], false);
}

#[tokio::test]
async fn clone_branch_with_depth() {
    if !have_git() {
        return;
    }
    let remote = Remote::new();
    let daemon = Daemon::start().await;
    // A file:// URL, because a plain path ignores --depth.
    expect_status(
        &daemon,
        "/git/clone",
        json!({"url": format!("file://{}", remote.url()), "path": "shallow", "branch": "feature", "depth": 1}),
        200,
    )
    .await;
    let repo = daemon.home.join("shallow");
    assert!(repo.join("feature.txt").is_file());
    assert_eq!(git(&repo, &["rev-list", "--count", "HEAD"]).trim(), "1");
    assert_eq!(status(&daemon, "shallow").await["currentBranch"], "feature");
}

#[tokio::test]
async fn clone_commit_detaches_head() {
    if !have_git() {
        return;
    }
    let remote = Remote::new();
    let daemon = Daemon::start().await;
    expect_status(
        &daemon,
        "/git/clone",
        json!({"url": remote.url(), "path": "at-commit", "commit_id": remote.first_commit}),
        200,
    )
    .await;
    let repo = daemon.home.join("at-commit");
    assert_eq!(
        git(&repo, &["rev-parse", "HEAD"]).trim(),
        remote.first_commit
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("README.md")).unwrap(),
        "one\n"
    );
    let status = status(&daemon, "at-commit").await;
    assert_eq!(status["detached"], true);
    assert_eq!(status["currentBranch"], "HEAD");
    assert_eq!(status["fileStatus"], json!([]));
    assert_eq!(branches(&daemon, "at-commit").await["current"], "");
}

#[tokio::test]
async fn clone_of_unknown_commit_leaves_nothing() {
    if !have_git() {
        return;
    }
    let remote = Remote::new();
    let daemon = Daemon::start().await;
    let reply = post(
        &daemon,
        "/git/clone",
        json!({"url": remote.url(), "path": "bad-commit", "commit_id": "0123456789abcdef0123456789abcdef01234567"}),
    )
    .await;
    assert_error_shape(&reply, 404, "GIT_BRANCH_NOT_FOUND", "POST", "/git/clone");
    assert!(!daemon.home.join("bad-commit").exists());
}

#[tokio::test]
async fn clone_failures_have_distinct_codes() {
    if !have_git() {
        return;
    }
    let remote = Remote::new();
    let daemon = Daemon::start().await;

    let reply = post(
        &daemon,
        "/git/clone",
        json!({"url": remote.root.join("missing.git").display().to_string(), "path": "a"}),
    )
    .await;
    assert_error_shape(&reply, 404, "GIT_REPO_NOT_FOUND", "POST", "/git/clone");

    let reply = post(
        &daemon,
        "/git/clone",
        json!({"url": remote.url(), "path": "b", "branch": "no-such-branch"}),
    )
    .await;
    assert_error_shape(&reply, 404, "GIT_BRANCH_NOT_FOUND", "POST", "/git/clone");
    assert!(!daemon.home.join("b").exists());

    std::fs::create_dir(daemon.home.join("taken")).unwrap();
    std::fs::write(daemon.home.join("taken/file"), "x").unwrap();
    let reply = post(
        &daemon,
        "/git/clone",
        json!({"url": remote.url(), "path": "taken"}),
    )
    .await;
    assert_error_shape(&reply, 409, "CONFLICT", "POST", "/git/clone");

    // Nothing listens on port 9 of loopback.
    let reply = post(
        &daemon,
        "/git/clone",
        json!({"url": "http://127.0.0.1:9/repo.git", "path": "c"}),
    )
    .await;
    assert_error_shape(&reply, 502, "GIT_TRANSPORT_FAILED", "POST", "/git/clone");

    let reply = post(
        &daemon,
        "/git/clone",
        json!({"url": "--upload-pack=touch /tmp/x", "path": "d"}),
    )
    .await;
    assert_error_shape(&reply, 400, "BAD_REQUEST", "POST", "/git/clone");

    let reply = post(
        &daemon,
        "/git/clone",
        json!({"url": remote.url(), "path": "e", "depth": 0}),
    )
    .await;
    assert_error_shape(&reply, 400, "BAD_REQUEST", "POST", "/git/clone");
}

#[tokio::test]
async fn clone_with_credentials_over_http() {
    if !have_git() {
        return;
    }
    let remote = Remote::new();
    let server = GitHttpServer::start(&remote.root, USERNAME, PASSWORD).await;
    let daemon = Daemon::start().await;

    // Credentials with `@`, `/`, `#` and `:` pass through the credential helper untouched.
    expect_status(
        &daemon,
        "/git/clone",
        json!({"url": server.url("repo.git"), "path": "private",
               "username": USERNAME, "password": PASSWORD}),
        200,
    )
    .await;
    let repo = daemon.home.join("private");
    assert!(repo.join("README.md").is_file());
    let config = std::fs::read_to_string(repo.join(".git/config")).unwrap();
    assert!(!config.contains("p@ss"), "{config}");
    assert!(!config.contains(USERNAME), "{config}");
    assert!(config.contains(&server.url("repo.git")), "{config}");
    assert!(!daemon.home.join(".git-credentials").exists());

    // Wrong credentials and no credentials are authentication failures, and quick ones:
    // nothing waits for a prompt.
    let reply = post(
        &daemon,
        "/git/clone",
        json!({"url": server.url("repo.git"), "path": "wrong",
               "username": USERNAME, "password": "not-the-password"}),
    )
    .await;
    assert_error_shape(&reply, 401, "GIT_AUTH_FAILED", "POST", "/git/clone");
    assert!(
        !reply.text().contains("not-the-password"),
        "{}",
        reply.text()
    );
    let reply = post(
        &daemon,
        "/git/clone",
        json!({"url": server.url("repo.git"), "path": "anonymous"}),
    )
    .await;
    assert_error_shape(&reply, 401, "GIT_AUTH_FAILED", "POST", "/git/clone");

    // A missing repository with good credentials is not an authentication failure.
    let reply = post(
        &daemon,
        "/git/clone",
        json!({"url": server.url("missing.git"), "path": "missing",
               "username": USERNAME, "password": PASSWORD}),
    )
    .await;
    assert_error_shape(&reply, 404, "GIT_REPO_NOT_FOUND", "POST", "/git/clone");
}

#[tokio::test]
async fn credentials_in_the_url_are_not_stored() {
    if !have_git() {
        return;
    }
    let remote = Remote::new();
    let server = GitHttpServer::start(&remote.root, USERNAME, PASSWORD).await;
    let daemon = Daemon::start().await;

    let url = format!(
        "http://user%40example.com:p%40ss%2Fw%23rd%3Ax@{}/repo.git",
        server.address
    );
    expect_status(
        &daemon,
        "/git/clone",
        json!({"url": url, "path": "embedded"}),
        200,
    )
    .await;
    let config = std::fs::read_to_string(daemon.home.join("embedded/.git/config")).unwrap();
    assert!(!config.contains("p%40ss"), "{config}");
    assert!(config.contains(&server.url("repo.git")), "{config}");
}

#[tokio::test]
async fn push_and_pull_with_credentials_over_http() {
    if !have_git() {
        return;
    }
    let remote = Remote::new();
    let server = GitHttpServer::start(&remote.root, USERNAME, PASSWORD).await;
    let daemon = Daemon::start().await;
    let credentials = json!({"username": USERNAME, "password": PASSWORD});
    let mut clone_body = json!({"url": server.url("repo.git"), "path": "repo"});
    clone_body
        .as_object_mut()
        .unwrap()
        .extend(credentials.as_object().unwrap().clone());
    expect_status(&daemon, "/git/clone", clone_body, 200).await;

    std::fs::write(daemon.home.join("repo/pushed.txt"), "pushed\n").unwrap();
    expect_status(
        &daemon,
        "/git/add",
        json!({"path": "repo", "files": ["pushed.txt"]}),
        200,
    )
    .await;
    let hash = commit(&daemon, "repo", "push over http").await;

    let reply = post(&daemon, "/git/push", json!({"path": "repo"})).await;
    assert_error_shape(&reply, 401, "GIT_AUTH_FAILED", "POST", "/git/push");
    expect_status(
        &daemon,
        "/git/push",
        json!({"path": "repo", "username": USERNAME, "password": PASSWORD}),
        200,
    )
    .await;
    assert_eq!(remote.head_of("main"), hash);

    // A remote given as a URL may carry the credentials; they stay out of git's arguments.
    std::fs::write(daemon.home.join("repo/second.txt"), "second\n").unwrap();
    expect_status(
        &daemon,
        "/git/add",
        json!({"path": "repo", "files": ["."]}),
        200,
    )
    .await;
    let second = commit(&daemon, "repo", "push to a url").await;
    let url = format!(
        "http://user%40example.com:p%40ss%2Fw%23rd%3Ax@{}/repo.git",
        server.address
    );
    expect_status(
        &daemon,
        "/git/push",
        json!({"path": "repo", "remote": url, "branch": "main"}),
        200,
    )
    .await;
    assert_eq!(remote.head_of("main"), second);

    remote.advance_main("from-elsewhere.txt", "x\n");
    expect_status(
        &daemon,
        "/git/pull",
        json!({"path": "repo", "username": USERNAME, "password": PASSWORD}),
        200,
    )
    .await;
    assert!(daemon.home.join("repo/from-elsewhere.txt").is_file());
}

#[tokio::test]
async fn status_reports_each_kind_of_change() {
    if !have_git() {
        return;
    }
    let remote = Remote::new();
    let daemon = Daemon::start().await;
    clone(&daemon, &remote, "repo").await;
    let repo = daemon.home.join("repo");

    std::fs::write(repo.join("README.md"), "changed\n").unwrap();
    std::fs::write(repo.join("new file.txt"), "new\n").unwrap();
    std::fs::create_dir(repo.join("dir")).unwrap();
    std::fs::write(repo.join("dir/untracked.txt"), "u\n").unwrap();
    std::fs::write(repo.join("staged.txt"), "s\n").unwrap();
    expect_status(
        &daemon,
        "/git/add",
        json!({"path": "repo", "files": ["staged.txt"]}),
        200,
    )
    .await;

    let status = status(&daemon, "repo").await;
    let files = status["fileStatus"].as_array().unwrap();
    let find = |name: &str| {
        files
            .iter()
            .find(|file| file["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing from {files:?}"))
            .clone()
    };
    let readme = find("README.md");
    assert_eq!(readme["staging"], "Unmodified");
    assert_eq!(readme["worktree"], "Modified");
    assert_eq!(readme["extra"], "");
    let staged = find("staged.txt");
    assert_eq!(staged["staging"], "Added");
    assert_eq!(staged["worktree"], "Unmodified");
    assert_eq!(find("new file.txt")["staging"], "Untracked");
    assert_eq!(find("dir/untracked.txt")["worktree"], "Untracked");
    assert_eq!(files.len(), 4, "{files:?}");
}

#[tokio::test]
async fn status_counts_ahead_and_behind() {
    if !have_git() {
        return;
    }
    let remote = Remote::new();
    let daemon = Daemon::start().await;
    clone(&daemon, &remote, "repo").await;
    let repo = daemon.home.join("repo");

    std::fs::write(repo.join("local.txt"), "l\n").unwrap();
    expect_status(
        &daemon,
        "/git/add",
        json!({"path": "repo", "files": ["."]}),
        200,
    )
    .await;
    commit(&daemon, "repo", "local").await;
    remote.advance_main("remote.txt", "r\n");
    git(&repo, &["fetch", "--quiet"]);

    let status = status(&daemon, "repo").await;
    assert_eq!(status["ahead"], 1);
    assert_eq!(status["behind"], 1);
    assert!(status["ahead"].is_u64());
}

#[tokio::test]
async fn status_outside_repository_is_not_found() {
    if !have_git() {
        return;
    }
    let daemon = Daemon::start().await;
    let reply = daemon.get("/git/status?path=nowhere").await;
    assert_error_shape(&reply, 404, "GIT_REPO_NOT_FOUND", "GET", "/git/status");
    let plain = tempfile::tempdir().unwrap();
    let reply = daemon
        .get(&format!("/git/status?path={}", plain.path().display()))
        .await;
    assert_error_shape(&reply, 404, "GIT_REPO_NOT_FOUND", "GET", "/git/status");
    let reply = daemon.get("/git/status").await;
    assert_error_shape(&reply, 400, "BAD_REQUEST", "GET", "/git/status");
}

#[tokio::test]
async fn branches_create_checkout_and_delete() {
    if !have_git() {
        return;
    }
    let remote = Remote::new();
    let daemon = Daemon::start().await;
    clone(&daemon, &remote, "repo").await;

    let listed = branches(&daemon, "repo").await;
    assert_eq!(listed["branches"], json!(["main"]));
    assert_eq!(listed["current"], "main");

    // Creating a branch checks it out, as Daytona's daemon does.
    expect_status(
        &daemon,
        "/git/branches",
        json!({"path": "repo", "name": "topic"}),
        201,
    )
    .await;
    let listed = branches(&daemon, "repo").await;
    assert_eq!(listed["branches"], json!(["main", "topic"]));
    assert_eq!(listed["current"], "topic");
    let reply = post(
        &daemon,
        "/git/branches",
        json!({"path": "repo", "name": "topic"}),
    )
    .await;
    assert_error_shape(&reply, 409, "GIT_BRANCH_EXISTS", "POST", "/git/branches");

    // A branch that exists only on the remote is created to track it.
    expect_status(
        &daemon,
        "/git/checkout",
        json!({"path": "repo", "branch": "feature"}),
        200,
    )
    .await;
    assert_eq!(status(&daemon, "repo").await["upstream"], "origin/feature");
    let reply = post(
        &daemon,
        "/git/checkout",
        json!({"path": "repo", "branch": "nope"}),
    )
    .await;
    assert_error_shape(&reply, 404, "GIT_BRANCH_NOT_FOUND", "POST", "/git/checkout");

    // A commit detaches HEAD.
    expect_status(
        &daemon,
        "/git/checkout",
        json!({"path": "repo", "branch": remote.first_commit}),
        200,
    )
    .await;
    assert_eq!(status(&daemon, "repo").await["detached"], true);
    expect_status(
        &daemon,
        "/git/checkout",
        json!({"path": "repo", "branch": "main"}),
        200,
    )
    .await;

    let reply = delete_branch(&daemon, "repo", "topic").await;
    assert_eq!(reply.status, 204, "{}", reply.text());
    assert_eq!(
        branches(&daemon, "repo").await["branches"],
        json!(["feature", "main"])
    );
    let reply = delete_branch(&daemon, "repo", "topic").await;
    assert_error_shape(
        &reply,
        404,
        "GIT_BRANCH_NOT_FOUND",
        "DELETE",
        "/git/branches",
    );
    let reply = delete_branch(&daemon, "repo", "main").await;
    assert_error_shape(&reply, 409, "CONFLICT", "DELETE", "/git/branches");
}

#[tokio::test]
async fn checkout_with_conflicting_changes_is_a_dirty_worktree() {
    if !have_git() {
        return;
    }
    let remote = Remote::new();
    let daemon = Daemon::start().await;
    clone(&daemon, &remote, "repo").await;
    // feature.txt exists on the feature branch, so an untracked one is in the way.
    std::fs::write(daemon.home.join("repo/feature.txt"), "local\n").unwrap();
    let reply = post(
        &daemon,
        "/git/checkout",
        json!({"path": "repo", "branch": "feature"}),
    )
    .await;
    assert_error_shape(&reply, 409, "GIT_DIRTY_WORKTREE", "POST", "/git/checkout");
}

#[tokio::test]
async fn add_and_commit_record_author() {
    if !have_git() {
        return;
    }
    let daemon = Daemon::start().await;
    expect_status(
        &daemon,
        "/git/init",
        json!({"path": "fresh", "initial_branch": "trunk"}),
        201,
    )
    .await;
    let repo = daemon.home.join("fresh");
    assert_eq!(branches(&daemon, "fresh").await["current"], "trunk");

    std::fs::write(repo.join("a.txt"), "a\n").unwrap();
    let reply = post(
        &daemon,
        "/git/add",
        json!({"path": "fresh", "files": ["missing.txt"]}),
    )
    .await;
    assert_error_shape(&reply, 404, "FILE_NOT_FOUND", "POST", "/git/add");
    let reply = post(&daemon, "/git/add", json!({"path": "fresh", "files": []})).await;
    assert_error_shape(&reply, 400, "BAD_REQUEST", "POST", "/git/add");
    expect_status(
        &daemon,
        "/git/add",
        json!({"path": "fresh", "files": ["a.txt"]}),
        200,
    )
    .await;

    let hash = commit(&daemon, "fresh", "first commit\n\nwith a body").await;
    assert_eq!(hash.len(), 40);
    assert_eq!(git(&repo, &["rev-parse", "HEAD"]).trim(), hash);
    assert_eq!(
        git(&repo, &["log", "-1", "--format=%an <%ae>|%cn <%ce>|%B"]).trim(),
        "Ann Author <ann@example.com>|Ann Author <ann@example.com>|first commit\n\nwith a body"
    );

    let reply = post(
        &daemon,
        "/git/commit",
        json!({"path": "fresh", "message": "nothing", "author": "A", "email": "a@example.com"}),
    )
    .await;
    assert_error_shape(&reply, 400, "BAD_REQUEST", "POST", "/git/commit");
    assert!(
        reply.json()["message"]
            .as_str()
            .unwrap()
            .contains("allow_empty")
    );
    let reply = expect_status(
        &daemon,
        "/git/commit",
        json!({"path": "fresh", "message": "empty", "author": "A", "email": "a@example.com", "allow_empty": true}),
        200,
    )
    .await;
    assert_ne!(reply.json()["hash"], hash);

    let history = daemon.get("/git/history?path=fresh").await;
    assert_eq!(history.status, 200);
    let history = history.json();
    assert_eq!(history.as_array().unwrap().len(), 2);
    assert_eq!(history[0]["message"], "empty");
    assert_eq!(history[1]["hash"], hash);
    assert_eq!(history[1]["author"], "Ann Author");
    assert_eq!(history[1]["email"], "ann@example.com");
    assert!(history[1]["timestamp"].as_str().unwrap().contains('T'));
}

#[tokio::test]
async fn commit_without_identity_explains_how_to_set_one() {
    if !have_git() {
        return;
    }
    let daemon = Daemon::start().await;
    expect_status(&daemon, "/git/init", json!({"path": "anon"}), 201).await;
    // Keeps git from making up an identity from the user and host names.
    expect_status(
        &daemon,
        "/git/config",
        json!({"key": "user.useConfigOnly", "value": "true"}),
        200,
    )
    .await;
    let reply = post(
        &daemon,
        "/git/commit",
        json!({"path": "anon", "message": "m", "author": "", "email": "", "allow_empty": true}),
    )
    .await;
    assert_error_shape(&reply, 400, "BAD_REQUEST", "POST", "/git/commit");
    let message = reply.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("/git/config/user"), "{message}");
}

#[tokio::test]
async fn hooks_do_not_run() {
    if !have_git() {
        return;
    }
    let remote = Remote::new();
    let daemon = Daemon::start().await;
    let marker = daemon.dir.path().join("hook-ran");
    // A template directory in the user's configuration would install this hook into clones.
    let template = daemon.dir.path().join("template");
    std::fs::create_dir_all(template.join("hooks")).unwrap();
    for hook in ["post-checkout", "pre-commit", "post-merge"] {
        let path = template.join("hooks").join(hook);
        std::fs::write(
            &path,
            format!("#!/bin/sh\necho {hook} >> {}\n", marker.display()),
        )
        .unwrap();
        Command::new("chmod")
            .arg("755")
            .arg(&path)
            .status()
            .unwrap();
    }
    expect_status(
        &daemon,
        "/git/config",
        json!({"key": "init.templateDir", "value": template.display().to_string()}),
        200,
    )
    .await;
    configure_user(&daemon).await;

    clone(&daemon, &remote, "repo").await;
    assert!(daemon.home.join("repo/.git/hooks/post-checkout").is_file());
    std::fs::write(daemon.home.join("repo/x.txt"), "x\n").unwrap();
    expect_status(
        &daemon,
        "/git/add",
        json!({"path": "repo", "files": ["."]}),
        200,
    )
    .await;
    commit(&daemon, "repo", "with hooks installed").await;
    remote.advance_main("y.txt", "y\n");
    expect_status(&daemon, "/git/pull", json!({"path": "repo"}), 200).await;
    assert!(
        !marker.exists(),
        "a hook ran: {}",
        std::fs::read_to_string(&marker).unwrap()
    );
}

#[tokio::test]
async fn push_rejections_and_upstream() {
    if !have_git() {
        return;
    }
    let remote = Remote::new();
    let daemon = Daemon::start().await;
    clone(&daemon, &remote, "repo").await;
    let repo = daemon.home.join("repo");

    // A new branch pushed with set_upstream tracks its remote branch.
    expect_status(
        &daemon,
        "/git/branches",
        json!({"path": "repo", "name": "pushed"}),
        201,
    )
    .await;
    std::fs::write(repo.join("p.txt"), "p\n").unwrap();
    expect_status(
        &daemon,
        "/git/add",
        json!({"path": "repo", "files": ["p.txt"]}),
        200,
    )
    .await;
    let hash = commit(&daemon, "repo", "on pushed").await;
    expect_status(
        &daemon,
        "/git/push",
        json!({"path": "repo", "set_upstream": true}),
        200,
    )
    .await;
    assert_eq!(remote.head_of("pushed"), hash);
    assert_eq!(status(&daemon, "repo").await["upstream"], "origin/pushed");

    // main moved on the remote: a push of the local main is rejected.
    expect_status(
        &daemon,
        "/git/checkout",
        json!({"path": "repo", "branch": "main"}),
        200,
    )
    .await;
    std::fs::write(repo.join("local.txt"), "l\n").unwrap();
    expect_status(
        &daemon,
        "/git/add",
        json!({"path": "repo", "files": ["local.txt"]}),
        200,
    )
    .await;
    commit(&daemon, "repo", "local").await;
    remote.advance_main("remote.txt", "r\n");
    let reply = post(
        &daemon,
        "/git/push",
        json!({"path": "repo", "branch": "main", "remote": "origin"}),
    )
    .await;
    assert_error_shape(&reply, 409, "GIT_PUSH_REJECTED", "POST", "/git/push");

    // A hook on the remote that refuses every push.
    let hook = remote.bare.join("hooks/pre-receive");
    std::fs::write(&hook, "#!/bin/sh\necho protected >&2\nexit 1\n").unwrap();
    Command::new("chmod")
        .arg("755")
        .arg(&hook)
        .status()
        .unwrap();
    expect_status(
        &daemon,
        "/git/checkout",
        json!({"path": "repo", "branch": "pushed"}),
        200,
    )
    .await;
    std::fs::write(repo.join("q.txt"), "q\n").unwrap();
    expect_status(
        &daemon,
        "/git/add",
        json!({"path": "repo", "files": ["q.txt"]}),
        200,
    )
    .await;
    commit(&daemon, "repo", "q").await;
    let reply = post(&daemon, "/git/push", json!({"path": "repo"})).await;
    assert_error_shape(&reply, 422, "GIT_REMOTE_REJECTED", "POST", "/git/push");
}

#[tokio::test]
async fn pull_merges_and_reports_conflicts() {
    if !have_git() {
        return;
    }
    let remote = Remote::new();
    let daemon = Daemon::start().await;
    configure_user(&daemon).await;
    clone(&daemon, &remote, "repo").await;
    let repo = daemon.home.join("repo");

    remote.advance_main("fast.txt", "ff\n");
    expect_status(&daemon, "/git/pull", json!({"path": "repo"}), 200).await;
    assert!(repo.join("fast.txt").is_file());
    assert_eq!(status(&daemon, "repo").await["behind"], 0);

    // A local change to a file the remote also changed is in the way of the merge.
    remote.advance_main("README.md", "remote\n");
    std::fs::write(repo.join("README.md"), "local, uncommitted\n").unwrap();
    let reply = post(&daemon, "/git/pull", json!({"path": "repo"})).await;
    assert_error_shape(&reply, 409, "GIT_DIRTY_WORKTREE", "POST", "/git/pull");

    // Committed, the same change conflicts.
    expect_status(
        &daemon,
        "/git/add",
        json!({"path": "repo", "files": ["README.md"]}),
        200,
    )
    .await;
    commit(&daemon, "repo", "local readme").await;
    let reply = post(
        &daemon,
        "/git/pull",
        json!({"path": "repo", "remote": "origin", "branch": "main"}),
    )
    .await;
    assert_error_shape(&reply, 409, "GIT_MERGE_CONFLICT", "POST", "/git/pull");
    let status = status(&daemon, "repo").await;
    let readme = status["fileStatus"]
        .as_array()
        .unwrap()
        .iter()
        .find(|file| file["name"] == "README.md")
        .unwrap()
        .clone();
    assert_eq!(readme["staging"], "Updated but unmerged");
}

#[tokio::test]
async fn reset_and_restore() {
    if !have_git() {
        return;
    }
    let remote = Remote::new();
    let daemon = Daemon::start().await;
    clone(&daemon, &remote, "repo").await;
    let repo = daemon.home.join("repo");

    // restore: the working tree from the index, then the index from HEAD.
    std::fs::write(repo.join("README.md"), "scribble\n").unwrap();
    expect_status(
        &daemon,
        "/git/restore",
        json!({"path": "repo", "files": ["README.md"]}),
        200,
    )
    .await;
    assert_eq!(
        std::fs::read_to_string(repo.join("README.md")).unwrap(),
        "one\ntwo\n"
    );
    std::fs::write(repo.join("README.md"), "staged change\n").unwrap();
    expect_status(
        &daemon,
        "/git/add",
        json!({"path": "repo", "files": ["README.md"]}),
        200,
    )
    .await;
    expect_status(
        &daemon,
        "/git/restore",
        json!({"path": "repo", "files": ["README.md"], "staged": true}),
        200,
    )
    .await;
    let readme = &status(&daemon, "repo").await["fileStatus"][0];
    assert_eq!(readme["staging"], "Unmodified");
    assert_eq!(readme["worktree"], "Modified");
    expect_status(
        &daemon,
        "/git/restore",
        json!({"path": "repo", "files": ["README.md"], "source": remote.first_commit}),
        200,
    )
    .await;
    assert_eq!(
        std::fs::read_to_string(repo.join("README.md")).unwrap(),
        "one\n"
    );
    let reply = post(
        &daemon,
        "/git/restore",
        json!({"path": "repo", "files": ["nope.txt"]}),
    )
    .await;
    assert_error_shape(&reply, 404, "FILE_NOT_FOUND", "POST", "/git/restore");

    // reset: unstage files, then move HEAD softly, then hard.
    std::fs::write(repo.join("new.txt"), "n\n").unwrap();
    expect_status(
        &daemon,
        "/git/add",
        json!({"path": "repo", "files": ["."]}),
        200,
    )
    .await;
    expect_status(
        &daemon,
        "/git/reset",
        json!({"path": "repo", "files": ["new.txt"]}),
        200,
    )
    .await;
    let files = status(&daemon, "repo").await["fileStatus"].clone();
    let new_file = files
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "new.txt")
        .unwrap();
    assert_eq!(new_file["staging"], "Untracked");

    expect_status(
        &daemon,
        "/git/reset",
        json!({"path": "repo", "mode": "soft", "target": "HEAD~1"}),
        200,
    )
    .await;
    assert_eq!(
        git(&repo, &["rev-parse", "HEAD"]).trim(),
        remote.first_commit
    );
    expect_status(
        &daemon,
        "/git/reset",
        json!({"path": "repo", "mode": "hard"}),
        200,
    )
    .await;
    assert_eq!(
        std::fs::read_to_string(repo.join("README.md")).unwrap(),
        "one\n"
    );

    let reply = post(
        &daemon,
        "/git/reset",
        json!({"path": "repo", "mode": "sideways"}),
    )
    .await;
    assert_error_shape(&reply, 400, "BAD_REQUEST", "POST", "/git/reset");
    let reply = post(
        &daemon,
        "/git/reset",
        json!({"path": "repo", "mode": "hard", "files": ["a"]}),
    )
    .await;
    assert_error_shape(&reply, 400, "BAD_REQUEST", "POST", "/git/reset");
    let reply = post(
        &daemon,
        "/git/reset",
        json!({"path": "repo", "target": "no-such-rev"}),
    )
    .await;
    assert_error_shape(&reply, 404, "GIT_BRANCH_NOT_FOUND", "POST", "/git/reset");
}

#[tokio::test]
async fn init_bare_repository() {
    if !have_git() {
        return;
    }
    let daemon = Daemon::start().await;
    expect_status(
        &daemon,
        "/git/init",
        json!({"path": "deep/bare.git", "bare": true}),
        201,
    )
    .await;
    let bare = daemon.home.join("deep/bare.git");
    assert!(bare.join("HEAD").is_file());
    assert!(!bare.join(".git").exists());
}

#[tokio::test]
async fn remotes_add_list_and_overwrite() {
    if !have_git() {
        return;
    }
    let remote = Remote::new();
    let daemon = Daemon::start().await;
    expect_status(&daemon, "/git/init", json!({"path": "repo"}), 201).await;

    let listed = daemon.get("/git/remotes?path=repo").await;
    assert_eq!(listed.json(), json!({"remotes": []}));

    expect_status(
        &daemon,
        "/git/remotes",
        json!({"path": "repo", "name": "origin", "url": remote.url(), "fetch": true}),
        201,
    )
    .await;
    assert!(git(&daemon.home.join("repo"), &["branch", "-r"]).contains("origin/main"));
    let reply = post(
        &daemon,
        "/git/remotes",
        json!({"path": "repo", "name": "origin", "url": "/elsewhere.git"}),
    )
    .await;
    assert_error_shape(&reply, 409, "CONFLICT", "POST", "/git/remotes");
    expect_status(
        &daemon,
        "/git/remotes",
        json!({"path": "repo", "name": "backup", "url": "https://me:secret@git.example.com/r.git"}),
        201,
    )
    .await;
    expect_status(
        &daemon,
        "/git/remotes",
        json!({"path": "repo", "name": "origin", "url": "/elsewhere.git", "overwrite": true}),
        201,
    )
    .await;

    let listed = daemon.get("/git/remotes?path=repo").await.json();
    assert_eq!(
        listed,
        json!({"remotes": [
            {"name": "backup", "url": "https://me:***@git.example.com/r.git"},
            {"name": "origin", "url": "/elsewhere.git"}
        ]})
    );
}

#[tokio::test]
async fn config_scopes_and_user() {
    if !have_git() {
        return;
    }
    let daemon = Daemon::start().await;
    let get = |query: &str| {
        let query = query.to_owned();
        let daemon = &daemon;
        async move {
            let reply = daemon.get(&format!("/git/config?{query}")).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            reply.json()["value"].clone()
        }
    };

    assert_eq!(get("key=user.name").await, Value::Null);
    expect_status(
        &daemon,
        "/git/config/user",
        json!({"name": "Global Person", "email": "global@example.com"}),
        200,
    )
    .await;
    assert_eq!(get("key=user.name").await, "Global Person");
    assert_eq!(
        get("key=user.email&scope=global").await,
        "global@example.com"
    );
    let gitconfig = std::fs::read_to_string(daemon.home.join(".gitconfig")).unwrap();
    assert!(gitconfig.contains("Global Person"), "{gitconfig}");

    expect_status(&daemon, "/git/init", json!({"path": "repo"}), 201).await;
    expect_status(
        &daemon,
        "/git/config",
        json!({"key": "core.autocrlf", "value": "input", "scope": "local", "path": "repo"}),
        200,
    )
    .await;
    assert_eq!(
        get("key=core.autocrlf&scope=local&path=repo").await,
        "input"
    );
    assert_eq!(get("key=core.autocrlf").await, Value::Null);

    // An identity set in the repository is used by commits that name none.
    expect_status(
        &daemon,
        "/git/config/user",
        json!({"name": "Local Person", "email": "local@example.com", "scope": "local", "path": "repo"}),
        200,
    )
    .await;
    let reply = expect_status(
        &daemon,
        "/git/commit",
        json!({"path": "repo", "message": "m", "author": "", "email": "", "allow_empty": true}),
        200,
    )
    .await;
    assert!(reply.json()["hash"].is_string());
    assert_eq!(
        git(&daemon.home.join("repo"), &["log", "-1", "--format=%an"]).trim(),
        "Local Person"
    );

    let reply = post(
        &daemon,
        "/git/config",
        json!({"key": "a.b", "value": "c", "scope": "local"}),
    )
    .await;
    assert_error_shape(&reply, 400, "BAD_REQUEST", "POST", "/git/config");
    let reply = post(
        &daemon,
        "/git/config",
        json!({"key": "a.b", "value": "c", "scope": "planet"}),
    )
    .await;
    assert_error_shape(&reply, 400, "BAD_REQUEST", "POST", "/git/config");
    let reply = post(
        &daemon,
        "/git/config",
        json!({"key": "nodot", "value": "c"}),
    )
    .await;
    assert_error_shape(&reply, 400, "BAD_REQUEST", "POST", "/git/config");
}

#[tokio::test]
async fn stored_credentials_serve_later_clones() {
    if !have_git() {
        return;
    }
    let remote = Remote::new();
    let server = GitHttpServer::start(&remote.root, USERNAME, PASSWORD).await;
    let daemon = Daemon::start().await;

    expect_status(
        &daemon,
        "/git/credentials",
        json!({"username": USERNAME, "password": PASSWORD, "host": server.address.to_string(), "protocol": "http"}),
        200,
    )
    .await;
    let stored = std::fs::read_to_string(daemon.home.join(".git-credentials")).unwrap();
    // The store percent-encodes the port's colon.
    assert!(
        stored.contains("@127.0.0.1%3a") || stored.contains("@127.0.0.1:"),
        "{stored}"
    );
    expect_status(
        &daemon,
        "/git/clone",
        json!({"url": server.url("repo.git"), "path": "with-stored"}),
        200,
    )
    .await;

    let reply = post(
        &daemon,
        "/git/credentials",
        json!({"username": "u", "password": "a\nb"}),
    )
    .await;
    assert_error_shape(&reply, 400, "BAD_REQUEST", "POST", "/git/credentials");
}

#[tokio::test]
async fn git_routes_reject_bad_bodies() {
    let daemon = Daemon::start().await;
    let reply = post(&daemon, "/git/clone", json!({"path": "x"})).await;
    assert_error_shape(&reply, 400, "INVALID_REQUEST_BODY", "POST", "/git/clone");
    let reply = daemon
        .send(Method::DELETE, "/git/branches", full("not json"))
        .await;
    assert_error_shape(
        &reply,
        400,
        "INVALID_REQUEST_BODY",
        "DELETE",
        "/git/branches",
    );
    let reply = post(
        &daemon,
        "/git/clone",
        json!({"url": "https://h/r.git", "path": "x", "username": "only-user"}),
    )
    .await;
    assert_error_shape(&reply, 400, "BAD_REQUEST", "POST", "/git/clone");
}

#[tokio::test]
async fn git_routes_are_documented() {
    let daemon = Daemon::start().await;
    let document = daemon.get("/openapi.json").await.json();
    let paths = document["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/git/clone", &["post"][..]),
        ("/git/status", &["get"]),
        ("/git/add", &["post"]),
        ("/git/commit", &["post"]),
        ("/git/branches", &["get", "post", "delete"]),
        ("/git/checkout", &["post"]),
        ("/git/push", &["post"]),
        ("/git/pull", &["post"]),
        ("/git/init", &["post"]),
        ("/git/reset", &["post"]),
        ("/git/restore", &["post"]),
        ("/git/remotes", &["get", "post"]),
        ("/git/config", &["get", "post"]),
        ("/git/config/user", &["post"]),
        ("/git/credentials", &["post"]),
        ("/git/history", &["get"]),
    ] {
        for method in methods {
            assert!(
                paths.get(path).and_then(|item| item.get(method)).is_some(),
                "{method} {path} is not documented"
            );
        }
    }
}
