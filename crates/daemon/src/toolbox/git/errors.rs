//! Turns a failed git run into Daytona's git error codes, from git's exit status and its
//! messages (which the runs get in English, see [`super::cli`]).
//!
//! The patterns are git's own wording (checked with git 2.39 and 2.47) and the replies of
//! common hosting services. A failure that matches none is a 400 with git's message.

use axum::http::StatusCode;

use super::cli::GitOutput;
use crate::toolbox::error::ApiError;

/// Maximum length of git's message in an error, in bytes. The end is kept because git prints
/// the reason last.
const MESSAGE_TAIL: usize = 2000;

/// The operation a git run belongs to. Some messages mean different things in different
/// operations (a pathspec that matches nothing is a missing branch for a checkout and a
/// missing file for an add).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitAction {
    Clone,
    Fetch,
    Push,
    Pull,
    Checkout,
    CreateBranch,
    DeleteBranch,
    ListBranches,
    Status,
    Add,
    Commit,
    Reset,
    Restore,
    Init,
    Remotes,
    Config,
    Credentials,
    History,
    Inspect,
}

impl GitAction {
    pub fn verb(self) -> &'static str {
        match self {
            Self::Clone => "clone",
            Self::Fetch => "fetch",
            Self::Push => "push",
            Self::Pull => "pull",
            Self::Checkout => "checkout",
            Self::CreateBranch => "branch creation",
            Self::DeleteBranch => "branch deletion",
            Self::ListBranches => "branch listing",
            Self::Status => "status",
            Self::Add => "add",
            Self::Commit => "commit",
            Self::Reset => "reset",
            Self::Restore => "restore",
            Self::Init => "init",
            Self::Remotes => "remote",
            Self::Config => "config",
            Self::Credentials => "credential",
            Self::History => "log",
            Self::Inspect => "rev-parse",
        }
    }
}

/// A class of git failure, with its HTTP status and Daytona code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    AuthFailed,
    AccessDenied,
    RepoNotFound,
    Transport,
    RemoteRejected,
    PushRejected,
    MergeConflict,
    DirtyWorktree,
    BranchExists,
    BranchCheckedOut,
    BranchNotFound,
    PathNotFound,
    Locked,
    DestinationExists,
    UnsafeRepository,
    PermissionDenied,
    MissingIdentity,
    NothingToCommit,
    Other,
}

impl Failure {
    fn status_and_code(self) -> (StatusCode, &'static str) {
        match self {
            Self::AuthFailed => (StatusCode::UNAUTHORIZED, "GIT_AUTH_FAILED"),
            Self::AccessDenied => (StatusCode::FORBIDDEN, "GIT_AUTH_FAILED"),
            Self::RepoNotFound => (StatusCode::NOT_FOUND, "GIT_REPO_NOT_FOUND"),
            Self::Transport => (StatusCode::BAD_GATEWAY, "GIT_TRANSPORT_FAILED"),
            Self::RemoteRejected => (StatusCode::UNPROCESSABLE_ENTITY, "GIT_REMOTE_REJECTED"),
            Self::PushRejected => (StatusCode::CONFLICT, "GIT_PUSH_REJECTED"),
            Self::MergeConflict => (StatusCode::CONFLICT, "GIT_MERGE_CONFLICT"),
            Self::DirtyWorktree => (StatusCode::CONFLICT, "GIT_DIRTY_WORKTREE"),
            Self::BranchExists => (StatusCode::CONFLICT, "GIT_BRANCH_EXISTS"),
            Self::BranchNotFound => (StatusCode::NOT_FOUND, "GIT_BRANCH_NOT_FOUND"),
            Self::PathNotFound => (StatusCode::NOT_FOUND, "FILE_NOT_FOUND"),
            Self::Locked | Self::DestinationExists | Self::BranchCheckedOut => {
                (StatusCode::CONFLICT, "CONFLICT")
            }
            Self::UnsafeRepository => (StatusCode::FORBIDDEN, "FORBIDDEN"),
            Self::PermissionDenied => (StatusCode::FORBIDDEN, "FILE_ACCESS_DENIED"),
            Self::MissingIdentity | Self::NothingToCommit | Self::Other => {
                (StatusCode::BAD_REQUEST, "BAD_REQUEST")
            }
        }
    }

    /// Returns what the caller can do about the failure, appended to git's message.
    fn hint(self) -> Option<&'static str> {
        match self {
            Self::AuthFailed => Some("check the username and password or token"),
            Self::AccessDenied => Some("the credentials lack access to this repository"),
            Self::Transport => Some("check the URL and that the remote is reachable"),
            Self::PushRejected => Some("pull the remote changes first, then push again"),
            Self::MergeConflict => Some("resolve the conflicts and commit, or abort the merge"),
            Self::DirtyWorktree => Some("commit or discard the local changes first"),
            Self::BranchCheckedOut => Some("check out another branch first"),
            Self::Locked => Some("another git command is running in this repository"),
            Self::UnsafeRepository => {
                Some("the repository belongs to another user; set safe.directory if it is trusted")
            }
            Self::NothingToCommit => {
                Some("stage changes with POST /git/add first, or set allow_empty")
            }
            Self::MissingIdentity => Some(
                "pass author and email, or set user.name and user.email with POST /git/config/user",
            ),
            _ => None,
        }
    }
}

/// Builds the error for a failed git run.
pub fn classify(output: &GitOutput) -> ApiError {
    let text = if output.stderr.trim().is_empty() {
        &output.stdout
    } else {
        &output.stderr
    };
    let failure = failure_of(output.action, text);
    let (status, code) = failure.status_and_code();

    let mut message = format!(
        "git {} failed (exit code {}): {}",
        output.action.verb(),
        output.exit_code,
        tail(text.trim())
    );
    if let Some(hint) = failure.hint() {
        message.push_str("; ");
        message.push_str(hint);
    }
    ApiError::new(status, code, message)
}

/// Finds the class of a failure from git's message. The order matters: the message of an
/// authentication failure also contains `unable to access`, and that of a rejected push also
/// contains `failed to push`.
fn failure_of(action: GitAction, text: &str) -> Failure {
    let text = text.to_ascii_lowercase();
    let has = |needle: &str| text.contains(needle);
    let remote_action = matches!(
        action,
        GitAction::Clone | GitAction::Fetch | GitAction::Push | GitAction::Pull
    );

    if has("dubious ownership") {
        return Failure::UnsafeRepository;
    }
    if has("index.lock") || has(".lock': file exists") {
        return Failure::Locked;
    }
    if remote_action && let Some(failure) = remote_failure(&text) {
        return failure;
    }
    if has("not a git repository") {
        return Failure::RepoNotFound;
    }
    if has("please tell me who you are")
        || has("identity unknown")
        || has("unable to auto-detect email")
        || has("empty ident name")
    {
        return Failure::MissingIdentity;
    }
    if action == GitAction::Commit
        && (has("nothing to commit")
            || has("no changes added to commit")
            || has("nothing added to commit"))
    {
        return Failure::NothingToCommit;
    }
    if has("conflict (")
        || has("automatic merge failed")
        || has("you have not concluded your merge")
        || has("unmerged files")
        || has("needs merge")
        || has("not possible to fast-forward")
        || has("fix conflicts")
    {
        return Failure::MergeConflict;
    }
    if has("would be overwritten by")
        || has("please commit your changes or stash them")
        || has("you have unstaged changes")
    {
        return Failure::DirtyWorktree;
    }
    if action == GitAction::DeleteBranch && (has("checked out at") || has("used by worktree")) {
        return Failure::BranchCheckedOut;
    }
    if action == GitAction::CreateBranch && has("already exists") {
        return Failure::BranchExists;
    }
    if has("already exists and is not an empty directory") {
        return Failure::DestinationExists;
    }
    if has("pathspec") && has("did not match") {
        return match action {
            GitAction::Checkout => Failure::BranchNotFound,
            _ => Failure::PathNotFound,
        };
    }
    if has("invalid reference")
        || has("unknown revision")
        || has("bad revision")
        || has("not a valid object name")
        || has("not a commit")
        || has("not a tree object")
        || has("could not resolve")
        || has("as a valid revision")
        || has("invalid upstream")
        || (has("branch '") && has("not found"))
        || (has("remote branch") && has("not found"))
    {
        return Failure::BranchNotFound;
    }
    if has("permission denied") || has("read-only file system") {
        return Failure::PermissionDenied;
    }
    Failure::Other
}

/// Classes of failure that only talking to a remote produces.
fn remote_failure(text: &str) -> Option<Failure> {
    let has = |needle: &str| text.contains(needle);

    // A git daemon returns the same error for a missing repository and a hidden one.
    if has("not exported") {
        return Some(Failure::RepoNotFound);
    }
    if has("authentication failed")
        || has("could not read username")
        || has("could not read password")
        || has("terminal prompts disabled")
        || has("invalid username or password")
        || has("http basic: access denied")
        || has("returned error: 401")
        || has("permission denied (publickey")
    {
        return Some(Failure::AuthFailed);
    }
    if has("returned error: 403") || (has("remote: permission") && has("denied")) {
        return Some(Failure::AccessDenied);
    }
    if has("repository not found")
        || has("returned error: 404")
        || has("does not appear to be a git repository")
        || (has("repository '") && (has("' not found") || has("' does not exist")))
    {
        return Some(Failure::RepoNotFound);
    }
    if has("[remote rejected]") || has("pre-receive hook declined") || has("protected branch") {
        return Some(Failure::RemoteRejected);
    }
    if has("[rejected]")
        || has("non-fast-forward")
        || has("fetch first")
        || has("updates were rejected")
        || has("stale info")
    {
        return Some(Failure::PushRejected);
    }
    if has("couldn't find remote ref")
        || (has("remote branch") && has("not found"))
        || (has("src refspec") && has("does not match any"))
    {
        return Some(Failure::BranchNotFound);
    }
    if has("could not resolve host")
        || has("could not resolve proxy")
        || has("failed to connect")
        || has("connection refused")
        || has("connection reset")
        || has("timed out")
        || has("no route to host")
        || has("network is unreachable")
        || has("ssl certificate problem")
        || has("ssl_connect")
        || has("gnutls")
        || has("certificate verify")
        || has("early eof")
        || has("hung up unexpectedly")
        || has("rpc failed")
        || has("operation too slow")
        || has("host key verification failed")
        || has("unable to connect")
        || has("returned error: 5")
        || has("unable to access")
        || has("could not read from remote repository")
    {
        return Some(Failure::Transport);
    }
    None
}

/// Returns the last [`MESSAGE_TAIL`] bytes of `text`, cut at a character boundary.
fn tail(text: &str) -> &str {
    if text.len() <= MESSAGE_TAIL {
        return text;
    }
    let mut start = text.len() - MESSAGE_TAIL;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(action: GitAction, stderr: &str) -> ApiError {
        classify(&GitOutput {
            action,
            exit_code: 128,
            stdout: String::new(),
            stderr: stderr.to_owned(),
        })
    }

    fn code(action: GitAction, stderr: &str) -> String {
        let error = failed(action, stderr);
        error.to_body("POST", "/git").code
    }

    #[test]
    fn bad_credentials_are_auth_failures() {
        assert_eq!(
            code(
                GitAction::Clone,
                "fatal: Authentication failed for 'http://127.0.0.1:1/r.git/'"
            ),
            "GIT_AUTH_FAILED"
        );
        assert_eq!(
            code(
                GitAction::Pull,
                "fatal: could not read Username for 'https://h': terminal prompts disabled"
            ),
            "GIT_AUTH_FAILED"
        );
    }

    #[test]
    fn missing_repositories_are_not_auth_failures() {
        for message in [
            "remote: Repository not found.\nfatal: repository 'https://h/x.git/' not found",
            "fatal: remote error: access denied or repository not exported: /x.git",
            "fatal: repository '/srv/none' does not exist",
            "fatal: 'origin' does not appear to be a git repository\nfatal: Could not read from remote repository.",
        ] {
            assert_eq!(
                code(GitAction::Clone, message),
                "GIT_REPO_NOT_FOUND",
                "{message}"
            );
        }
        assert_eq!(
            code(
                GitAction::Status,
                "fatal: not a git repository (or any of the parent directories): .git"
            ),
            "GIT_REPO_NOT_FOUND"
        );
    }

    #[test]
    fn unreachable_remotes_are_transport_failures() {
        let error = failed(
            GitAction::Clone,
            "fatal: unable to access 'http://127.0.0.1:9/r.git/': Failed to connect to 127.0.0.1 port 9",
        );
        let body = error.to_body("POST", "/git/clone");
        assert_eq!(body.code, "GIT_TRANSPORT_FAILED");
        assert_eq!(body.status_code, 502);
    }

    #[test]
    fn push_rejections_are_told_apart() {
        assert_eq!(
            code(
                GitAction::Push,
                " ! [rejected]        main -> main (fetch first)\nerror: failed to push some refs"
            ),
            "GIT_PUSH_REJECTED"
        );
        assert_eq!(
            code(
                GitAction::Push,
                " ! [remote rejected] main -> main (pre-receive hook declined)"
            ),
            "GIT_REMOTE_REJECTED"
        );
    }

    #[test]
    fn local_state_failures() {
        assert_eq!(
            code(
                GitAction::Pull,
                "CONFLICT (content): Merge conflict in a.txt\nAutomatic merge failed; fix conflicts and then commit the result."
            ),
            "GIT_MERGE_CONFLICT"
        );
        assert_eq!(
            code(
                GitAction::Checkout,
                "error: Your local changes to the following files would be overwritten by checkout:\n\ta.txt"
            ),
            "GIT_DIRTY_WORKTREE"
        );
        assert_eq!(
            code(
                GitAction::CreateBranch,
                "fatal: a branch named 'x' already exists"
            ),
            "GIT_BRANCH_EXISTS"
        );
        assert_eq!(
            code(GitAction::Checkout, "fatal: invalid reference: nope"),
            "GIT_BRANCH_NOT_FOUND"
        );
        assert_eq!(
            code(GitAction::DeleteBranch, "error: branch 'nope' not found."),
            "GIT_BRANCH_NOT_FOUND"
        );
        assert_eq!(
            code(
                GitAction::Clone,
                "warning: Could not find remote branch nope to clone.\nfatal: Remote branch nope not found in upstream origin"
            ),
            "GIT_BRANCH_NOT_FOUND"
        );
        assert_eq!(
            code(
                GitAction::Add,
                "fatal: pathspec 'missing.txt' did not match any files"
            ),
            "FILE_NOT_FOUND"
        );
    }

    #[test]
    fn empty_commit_has_hint() {
        let error = classify(&GitOutput {
            action: GitAction::Commit,
            exit_code: 1,
            stdout: "On branch main\nnothing to commit, working tree clean\n".to_owned(),
            stderr: String::new(),
        });
        let body = error.to_body("POST", "/git/commit");
        assert_eq!(body.status_code, 400);
        assert!(body.message.contains("allow_empty"), "{}", body.message);
    }

    #[test]
    fn unknown_failures_are_bad_requests_with_gits_message() {
        let error = failed(GitAction::Config, "error: invalid key: nodot");
        let body = error.to_body("POST", "/git/config");
        assert_eq!(body.status_code, 400);
        assert!(
            body.message.contains("invalid key: nodot"),
            "{}",
            body.message
        );
    }

    #[test]
    fn message_tail_keeps_the_end() {
        let long = format!("{}END", "é".repeat(MESSAGE_TAIL));
        let cut = tail(&long);
        assert!(cut.ends_with("END"));
        assert!(cut.len() <= MESSAGE_TAIL);
    }
}
