//! `RUN` steps of image builds, each in a short-lived sandbox of the isolation runtime.
//!
//! The step's sandbox stacks the image's layers under a fresh upper directory, has a network
//! namespace with loopback only, and runs the command as PID 1's only workload (the
//! `init -- COMMAND` mode of the daemon) under a small `/bin/sh` wrapper. The wrapper sets the
//! image's environment, enters the work directory, switches to the image's user with
//! `setpriv`, and writes the command's output and exit code to two files at the root, which
//! the runner reads through the upper directory and removes before the layer is packed.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use daytona_images::OwnerShift;
use daytona_images::build::{RunFuture, RunOutcome, RunStep, StepRunner, StepRunnerError};
use daytona_isolation::cgroup::{self, SandboxCgroup};
use daytona_isolation::run_dir;
use daytona_isolation::spawn;
use daytona_isolation::spec::{DAEMON_PATH_IN_SANDBOX, ETC_FILES, IdMap, SandboxSpec};
use daytona_wire::daemon::{DEFAULT_OUTPUT_LIMIT, DaemonConfig};

use crate::runner::Runner;
use crate::slots;

/// File at the sandbox's root that receives the command's output.
const OUTPUT_FILE: &str = ".daytona-build-output";

/// File at the sandbox's root that receives the command's exit code.
const STATUS_FILE: &str = ".daytona-build-status";

/// How often the output file is read while the command runs.
const OUTPUT_POLL: Duration = Duration::from_millis(200);

/// Limits of a build step's sandbox: 2 vCPUs, 2 GiB of memory and 4096 processes.
const STEP_LIMITS: cgroup::Limits = cgroup::Limits {
    cpus: 2,
    memory_bytes: 2 << 30,
    pids: 4096,
};

/// The wrapper: `$1` work directory, `$2` user (empty for root), `$3` the number of
/// `NAME=value` arguments that follow, then the command. It runs as the sandbox's root, so
/// that it can write the status file after a command of another user.
const WRAPPER: &str = r#"exec >>"/.daytona-build-output" 2>&1 </dev/null
status() { echo "$1" >/.daytona-build-status; exit 0; }
dir=$1 user=$2 count=$3
shift 3
while [ "$count" -gt 0 ]; do export "$1"; shift; count=$((count - 1)); done
mkdir -p "$dir" && cd "$dir" || { echo "failed to enter the work directory $dir"; status 1; }
if [ -n "$user" ]; then
    name=${user%%:*}
    case $user in *:*) group=${user#*:} ;; *) group=$(id -g "$name" 2>/dev/null || echo "$name") ;; esac
    if id "$name" >/dev/null 2>&1; then groups=--init-groups; else groups=--clear-groups; fi
    command -v setpriv >/dev/null || { echo "USER $user needs setpriv (util-linux) in the image"; status 126; }
    set -- setpriv --reuid="$name" --regid="$group" "$groups" -- "$@"
fi
"$@"
status $?
"#;

/// Why a build step could not run.
#[derive(Debug, thiserror::Error)]
pub enum BuildStepError {
    #[error("no free uid range for a build step")]
    NoFreeSlot,
    #[error("failed to prepare the build step's sandbox")]
    Prepare(#[source] io::Error),
    #[error(transparent)]
    Cgroup(#[from] daytona_isolation::cgroup::CgroupError),
    #[error(transparent)]
    RunDir(#[from] daytona_isolation::run_dir::RunDirError),
    #[error(transparent)]
    Spawn(#[from] daytona_isolation::spawn::SpawnError),
    #[error("the build step's command ended without an exit code; its sandbox log: {log}")]
    NoStatus { log: String },
}

impl StepRunner for Runner {
    fn run<'a>(&'a self, step: RunStep<'a>) -> RunFuture<'a> {
        Box::pin(async move {
            self.run_build_step(step)
                .await
                .map_err(|error| Box::new(error) as StepRunnerError)
        })
    }
}

/// What a build step holds on the host; dropping it kills the step's processes, removes its
/// cgroups and frees its uid range.
struct StepSandbox<'a> {
    runner: &'a Runner,
    slot: u32,
    cgroup: Option<SandboxCgroup>,
}

impl Drop for StepSandbox<'_> {
    fn drop(&mut self) {
        if let Some(cgroup) = self.cgroup.take() {
            if let Err(error) = cgroup.kill_all() {
                tracing::warn!(%error, "failed to kill the processes of a build step");
            }
            if let Err(error) = cgroup.remove() {
                tracing::warn!(%error, "failed to remove the cgroups of a build step");
            }
        }
        self.runner
            .slots
            .lock()
            .expect("slots lock")
            .release(self.slot);
    }
}

impl Runner {
    async fn run_build_step(&self, step: RunStep<'_>) -> Result<RunOutcome, BuildStepError> {
        // 1. A uid range of its own, like any sandbox, held until the step ends.
        let slot = self
            .slots
            .lock()
            .expect("slots lock")
            .allocate(step.scratch_dir)
            .ok_or(BuildStepError::NoFreeSlot)?;
        let mut sandbox = StepSandbox {
            runner: self,
            slot,
            cgroup: None,
        };
        let sandbox_id = format!("build-{}", uuid::Uuid::new_v4().simple());
        let id_map = IdMap {
            host_base: slots::host_base(slot),
            size: slots::RANGE_SIZE,
        };

        // 2. The spec: the image's layers over the step's upper directory.
        let work = step.scratch_dir.join("work");
        fs::create_dir_all(&work).map_err(BuildStepError::Prepare)?;
        let mut spec = SandboxSpec {
            sandbox_id: sandbox_id.clone(),
            hostname: "buildkit".to_owned(),
            layers: step.layers.to_vec(),
            upper_dir: step.upper_dir.to_owned(),
            overlay_work_dir: work,
            disk_image: None,
            volumes: Vec::new(),
            run_dir: step.scratch_dir.join("run"),
            id_map,
            cgroup_dirs: Vec::new(),
            daemon_binary: self.runtime.daemon_binary().to_owned(),
            daemon: DaemonConfig {
                sandbox_id: sandbox_id.clone(),
                user: "root".to_owned(),
                env: BTreeMap::new(),
                output_limit: DEFAULT_OUTPUT_LIMIT,
                confine_workloads: true,
                workload_env: None,
                work_dir: None,
            },
            init_command: Some(wrapper_argv(&step)),
        };
        run_dir::prepare(&spec)?;
        let cgroup = self.runtime.cgroups().create(&sandbox_id, &STEP_LIMITS)?;
        spec.cgroup_dirs = cgroup.dirs();
        sandbox.cgroup = Some(cgroup);

        // 3. Run it, passing on its output while it runs.
        tracing::info!(sandbox_id, "build step started");
        let process = spawn::start(&spec).await?;
        let output_path = step.upper_dir.join(OUTPUT_FILE);
        let mut output = OutputReader::default();
        let exited = spawn::wait_exit(&process);
        tokio::pin!(exited);
        loop {
            tokio::select! {
                result = &mut exited => {
                    result?;
                    break;
                }
                () = tokio::time::sleep(OUTPUT_POLL) => output.forward(&output_path, step.log),
            }
        }
        output.forward(&output_path, step.log);
        output.finish(step.log);
        drop(sandbox);

        // 4. The exit code, then the upper directory without what the wrapper and the
        //    runtime's mount points added.
        let status_path = step.upper_dir.join(STATUS_FILE);
        let status = fs::read_to_string(&status_path).ok();
        let exit_code = match status.as_deref().map(str::trim).map(str::parse::<i32>) {
            Some(Ok(code)) => code,
            _ => {
                let log = fs::read_to_string(spec.run_dir.join(daytona_isolation::spec::LOG_FILE))
                    .unwrap_or_default();
                return Err(BuildStepError::NoStatus { log });
            }
        };
        tracing::info!(sandbox_id, exit_code, "build step ended");
        for file in [&output_path, &status_path] {
            fs::remove_file(file).map_err(BuildStepError::Prepare)?;
        }
        remove_mount_points(step.upper_dir, step.layers);
        Ok(RunOutcome {
            exit_code,
            owners: Some(OwnerShift {
                host_base: id_map.host_base,
                size: id_map.size,
            }),
        })
    }
}

fn wrapper_argv(step: &RunStep<'_>) -> Vec<String> {
    let mut argv = vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        WRAPPER.to_owned(),
        "daytona-build".to_owned(),
        step.work_dir.clone(),
        step.user.clone().unwrap_or_default(),
        step.env.len().to_string(),
    ];
    argv.extend(step.env.iter().cloned());
    argv.extend(step.argv.iter().cloned());
    argv
}

/// Reads the output file from where it stopped and passes on complete lines.
#[derive(Default)]
struct OutputReader {
    offset: u64,
    partial: Vec<u8>,
}

impl OutputReader {
    fn forward(&mut self, path: &Path, log: daytona_images::Progress<'_>) {
        let Ok(mut file) = fs::File::open(path) else {
            return;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut chunk = Vec::new();
        let Ok(read) = file.read_to_end(&mut chunk) else {
            return;
        };
        self.offset += read as u64;
        self.partial.extend_from_slice(&chunk);
        while let Some(end) = self.partial.iter().position(|&byte| byte == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            log(String::from_utf8_lossy(&line[..line.len() - 1]).trim_end_matches('\r'));
        }
    }

    fn finish(&mut self, log: daytona_images::Progress<'_>) {
        if !self.partial.is_empty() {
            log(&String::from_utf8_lossy(&self.partial));
            self.partial.clear();
        }
    }
}

/// Removes from the upper directory the empty mount points that the isolation runtime created
/// for a sandbox of an image without them: the daemon binary, `/etc` files and the kernel
/// filesystems' directories. A path that any layer has stays.
fn remove_mount_points(upper: &Path, layers: &[PathBuf]) {
    let mut candidates: Vec<String> =
        vec![DAEMON_PATH_IN_SANDBOX.trim_start_matches('/').to_owned()];
    candidates.extend(ETC_FILES.iter().map(|name| format!("etc/{name}")));
    candidates.extend(["proc", "sys", "dev", "tmp"].map(String::from));
    for candidate in candidates {
        let mut relative = PathBuf::from(candidate);
        loop {
            let in_layers = layers
                .iter()
                .any(|layer| fs::symlink_metadata(layer.join(&relative)).is_ok());
            let path = upper.join(&relative);
            let removed = !in_layers
                && match fs::symlink_metadata(&path) {
                    Ok(metadata) if metadata.is_dir() => fs::remove_dir(&path).is_ok(),
                    Ok(metadata) if metadata.is_file() && metadata.len() == 0 => {
                        fs::remove_file(&path).is_ok()
                    }
                    _ => false,
                };
            if !removed || !relative.pop() || relative.as_os_str().is_empty() {
                break;
            }
        }
    }
}
