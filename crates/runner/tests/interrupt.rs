//! A start held by the runner's hang aid ends at once when it is interrupted or
//! the sandbox is destroyed. The daemon binary is `/bin/true`, so nothing really starts.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use daytona_runner::{CreateParams, Limits, Runner, RunnerConfig, RunnerError};

/// Opens a runner whose starts hang while `hang_file` exists, or `None` (after printing
/// SKIPPED) where the runtime cannot be used.
async fn runner(dir: &Path, hang_file: &Path) -> Option<Arc<Runner>> {
    let config = RunnerConfig {
        sandboxes_dir: dir.join("sandboxes"),
        daemon_binary: "/bin/true".into(),
        warm_pool_size: 0,
        hang_start_file: Some(hang_file.to_owned()),
        uid_slot_registry: None,
        network: None,
    };
    match Runner::open(config).await {
        Ok(runner) => Some(Arc::new(runner)),
        Err(error) => {
            eprintln!("SKIPPED: the runner cannot open here: {error}");
            None
        }
    }
}

fn params(sandbox_id: &str) -> CreateParams {
    CreateParams {
        sandbox_id: sandbox_id.to_owned(),
        layers: Vec::new(),
        user: "daytona".into(),
        env: Default::default(),
        limits: Limits::default(),
        volumes: Vec::new(),
        work_dir: None,
        egress: Default::default(),
    }
}

/// Starts `sandbox_id` in a task and waits until the start is held by the hang aid.
async fn hanging_start(
    runner: &Arc<Runner>,
    sandbox_id: &str,
) -> tokio::task::JoinHandle<Result<(), RunnerError>> {
    let task_runner = runner.clone();
    let task_id = sandbox_id.to_owned();
    let start = tokio::spawn(async move { task_runner.start(&task_id).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!start.is_finished(), "the start did not hang");
    start
}

#[tokio::test]
async fn interrupt_ends_hanging_start() {
    let dir = tempfile::tempdir().unwrap();
    let hang = dir.path().join("hang");
    std::fs::write(&hang, b"").unwrap();
    let Some(runner) = runner(dir.path(), &hang).await else {
        return;
    };
    runner.prepare(params("held")).unwrap();
    let start = hanging_start(&runner, "held").await;

    let interrupted = Instant::now();
    runner.interrupt("held");
    let result = tokio::time::timeout(Duration::from_secs(5), start)
        .await
        .expect("the interrupted start ended")
        .unwrap();
    assert!(
        matches!(result, Err(RunnerError::Interrupted { .. })),
        "{result:?}"
    );
    assert!(interrupted.elapsed() < Duration::from_secs(1));
    // The files stay, and nothing runs.
    assert!(runner.contains("held"));
    assert!(runner.workload_usage("held").is_none());
    runner.destroy("held").await.unwrap();
}

#[tokio::test]
async fn destroy_does_not_wait_for_hanging_start() {
    let dir = tempfile::tempdir().unwrap();
    let hang = dir.path().join("hang");
    std::fs::write(&hang, b"").unwrap();
    let Some(runner) = runner(dir.path(), &hang).await else {
        return;
    };
    runner.prepare(params("doomed")).unwrap();
    let start = hanging_start(&runner, "doomed").await;

    let destroyed = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), runner.destroy("doomed"))
        .await
        .expect("the destroy finished")
        .unwrap();
    assert!(destroyed.elapsed() < Duration::from_secs(1));
    let result = start.await.unwrap();
    assert!(
        matches!(result, Err(RunnerError::Interrupted { .. })),
        "{result:?}"
    );
    assert!(!runner.contains("doomed"));
    assert!(!dir.path().join("sandboxes/doomed").exists());

    // A start after the destroy finds nothing.
    let again = runner.start("doomed").await;
    assert!(
        matches!(again, Err(RunnerError::NotFound { .. })),
        "{again:?}"
    );
}

#[tokio::test]
async fn start_without_hang_file_runs_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let hang = dir.path().join("absent");
    let Some(runner) = runner(dir.path(), &hang).await else {
        return;
    };
    runner.prepare(params("plain")).unwrap();
    // `/bin/true` is no daemon, so the runtime's start fails, promptly and not as interrupted.
    let result = tokio::time::timeout(Duration::from_secs(30), runner.start("plain"))
        .await
        .expect("the start ended");
    assert!(matches!(result, Err(RunnerError::Runtime(_))), "{result:?}");
    runner.destroy("plain").await.unwrap();
}
