//! Recipes: how a single-layer image is built from nothing, and the Debian (mmdebstrap) recipe
//! of the default snapshot.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::{ImageConfig, Progress};

/// Version of the way a recipe's tree becomes an image (packer, unpacker, config). It is part of
/// every recipe digest, so raising it rebuilds cached images.
const BUILD_FORMAT_VERSION: u32 = 1;

/// Number of output lines kept for the error message of a failed build.
const OUTPUT_TAIL_LINES: usize = 30;

/// A recipe builds the root filesystem of a single-layer image into an empty directory.
///
/// The store keys a built image by [`Recipe::digest`]: when the digest of the recipe it is asked
/// for differs from the one the cached image was built from, it builds again.
pub trait Recipe: Sync {
    /// Returns `sha256:<hex>` of every input that shapes the tree and the configuration.
    fn digest(&self) -> String;

    /// Returns the configuration recorded in the image.
    fn config(&self) -> ImageConfig;

    /// Fills `rootfs`, an existing empty directory with mode 0755 owned by the caller, and
    /// reports progress lines through `progress` as they come.
    fn build(
        &self,
        rootfs: &Path,
        progress: Progress<'_>,
    ) -> impl Future<Output = Result<(), BuildError>> + Send;
}

/// Errors of a recipe's build.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{program} must run as root to build an image with the right file owners")]
    NotRoot { program: &'static str },
    #[error("failed to start {program}; is it installed (apt-get install {program})?")]
    Spawn {
        program: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("failed to wait for {program}")]
    Wait {
        program: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{program} failed ({status}); its last output lines:\n{output_tail}")]
    Failed {
        program: &'static str,
        status: ExitStatus,
        output_tail: String,
    },
    #[error("failed to write {} into the root filesystem", path.display())]
    WriteRootfs {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A Debian root filesystem built by mmdebstrap: a suite, a package list and shell hooks that run
/// after the packages are installed.
///
/// Every field is part of the digest. To add software to the default snapshot, add packages to
/// `packages`, or commands to `customize_hooks` for what Debian does not package (an
/// `npm install -g` inside the root, for example).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DebianRecipe {
    /// Debian suite, such as `bookworm`.
    pub suite: String,
    /// mmdebstrap `--variant`: which packages form the base before `packages` is added.
    pub variant: String,
    /// One-line apt sources (`deb URL SUITE COMPONENTS`); the first one's suite is `suite`.
    pub sources: Vec<String>,
    /// Packages installed on top of the variant.
    pub packages: Vec<String>,
    /// apt configuration lines (`--aptopt`); mmdebstrap also leaves them in the image's
    /// `/etc/apt/apt.conf.d/99mmdebstrap`.
    pub apt_options: Vec<String>,
    /// Shell commands run by mmdebstrap (`--customize-hook`) after installation, with the root
    /// directory in `$1`; `chroot "$1" COMMAND` runs COMMAND inside the new root.
    pub customize_hooks: Vec<String>,
    /// `NAME=value` environment of the image.
    pub env: Vec<String>,
    /// Working directory of the image.
    pub working_dir: String,
}

impl DebianRecipe {
    /// Returns the recipe of the default snapshot, which is Debian 12 with bash, coreutils,
    /// Python 3 (pip, venv and the pylsp language server), git, curl, CA certificates, procps,
    /// sudo and the SFTP server. It adds Node.js 18 with npm, TypeScript, esbuild and
    /// typescript-language-server, and a user `daytona` (uid and gid 1000) with passwordless
    /// sudo whose home `/home/daytona` is the working directory.
    pub fn default_snapshot() -> Self {
        let packages = [
            "bash",
            "ca-certificates",
            "coreutils",
            "curl",
            "git",
            "nodejs",
            "npm",
            "openssh-sftp-server",
            // useradd and groupadd for the hooks below.
            "passwd",
            "procps",
            "python3",
            "python-is-python3",
            "python3-pip",
            "python3-pylsp",
            "python3-venv",
            "sudo",
        ];
        let customize_hooks = [
            // Debian does not package these. Exact versions keep the build reproducible (none of
            // them has a dependency with a version range), and the packages go under
            // /usr/local, so that nothing fetches them at run time. esbuild turns TypeScript into
            // JavaScript for code-run. typescript-language-server 4.4 is the last release that
            // supports Node.js 18 (bookworm's), and it finds tsserver in the typescript package
            // next to it. npm trusts the build host's CA bundle, because the root's own bundle
            // lacks the CA of a TLS-inspecting egress proxy that the host may trust. The copy is
            // removed afterwards. The last steps check that each tool starts under the image's
            // Node.js.
            concat!(
                r#"cp /etc/ssl/certs/ca-certificates.crt "$1/tmp/build-host-ca.crt""#,
                r#" && chroot "$1" npm install --global --prefix /usr/local --cache /tmp/npm-cache"#,
                r#" --cafile /tmp/build-host-ca.crt --registry https://registry.npmjs.org/"#,
                r#" --no-audit --no-fund --no-update-notifier"#,
                r#" typescript@5.9.3 typescript-language-server@4.4.1 esbuild@0.28.2"#,
                r#" && rm -rf "$1/tmp/npm-cache" "$1/tmp/build-host-ca.crt" "$1/root/.npm""#,
                r#" && chroot "$1" esbuild --version"#,
                r#" && chroot "$1" tsc --version"#,
                r#" && chroot "$1" typescript-language-server --version"#,
            ),
            r#"chroot "$1" groupadd --gid 1000 daytona"#,
            r#"chroot "$1" useradd --uid 1000 --gid 1000 --create-home --home-dir /home/daytona --shell /bin/bash daytona"#,
            r#"printf 'daytona ALL=(ALL) NOPASSWD:ALL\n' > "$1/etc/sudoers.d/daytona" && chmod 0440 "$1/etc/sudoers.d/daytona" && chroot "$1" visudo --check --file=/etc/sudoers.d/daytona"#,
            // Debian marks its Python as externally managed (PEP 668), which makes a plain
            // `pip install` fail; sandbox users expect it to work, so the marker goes.
            r#"rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED"#,
            // mmdebstrap copies the build host's /etc/hostname and /etc/resolv.conf into the
            // root. Neutral files replace them; the runtime writes these per sandbox.
            concat!(
                r#"rm -f "$1/etc/hostname" "$1/etc/resolv.conf" "$1/etc/hosts""#,
                r#" && printf 'daytona\n' > "$1/etc/hostname""#,
                r#" && : > "$1/etc/resolv.conf""#,
                r#" && printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$1/etc/hosts""#,
                r#" && chmod 0644 "$1/etc/hostname" "$1/etc/resolv.conf" "$1/etc/hosts""#,
            ),
        ];
        Self {
            suite: "bookworm".to_owned(),
            variant: "apt".to_owned(),
            sources: vec![
                "deb http://deb.debian.org/debian bookworm main".to_owned(),
                "deb http://deb.debian.org/debian bookworm-updates main".to_owned(),
                "deb http://deb.debian.org/debian-security bookworm-security main".to_owned(),
            ],
            packages: packages.map(str::to_owned).to_vec(),
            // Retries make a dropped mirror connection cost seconds instead of the whole build.
            apt_options: vec![r#"Acquire::Retries "3""#.to_owned()],
            customize_hooks: customize_hooks.map(str::to_owned).to_vec(),
            env: vec![
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
                "LANG=C.UTF-8".to_owned(),
            ],
            working_dir: "/home/daytona".to_owned(),
        }
    }

    /// Returns the mmdebstrap arguments that build this recipe into `rootfs`.
    pub fn mmdebstrap_args(&self, rootfs: &Path) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--mode=root".into(),
            "--format=directory".into(),
            format!("--variant={}", self.variant).into(),
        ];
        for option in &self.apt_options {
            args.push(format!("--aptopt={option}").into());
        }
        if !self.packages.is_empty() {
            args.push(format!("--include={}", self.packages.join(",")).into());
        }
        for hook in &self.customize_hooks {
            args.push(format!("--customize-hook={hook}").into());
        }
        args.push(self.suite.clone().into());
        args.push(rootfs.into());
        args.extend(self.sources.iter().map(OsString::from));
        args
    }
}

impl Recipe for DebianRecipe {
    fn digest(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(format!(
            "daytona-images build format {BUILD_FORMAT_VERSION}\n"
        ));
        hasher.update(serde_json::to_vec(self).expect("a recipe always serializes"));
        format!("sha256:{}", hex::encode(hasher.finalize()))
    }

    fn config(&self) -> ImageConfig {
        ImageConfig {
            env: self.env.clone(),
            working_dir: Some(self.working_dir.clone()),
            ..ImageConfig::default()
        }
    }

    async fn build(&self, rootfs: &Path, progress: Progress<'_>) -> Result<(), BuildError> {
        const PROGRAM: &str = "mmdebstrap";
        if !nix::unistd::geteuid().is_root() {
            return Err(BuildError::NotRoot { program: PROGRAM });
        }
        run_forwarding_output(PROGRAM, &self.mmdebstrap_args(rootfs), progress).await
    }
}

/// Runs `program` in its own process group and private mount namespace, forwarding each line of
/// its stdout and stderr to `progress` and the log as it arrives.
///
/// The private mount namespace makes the mounts that mmdebstrap sets up inside the new root
/// (`/proc`, `/sys`, `/dev`) disappear with it, even when it is killed. If this future is dropped
/// before the program exits, the whole process group is killed.
async fn run_forwarding_output(
    program: &'static str,
    args: &[OsString],
    progress: Progress<'_>,
) -> Result<(), BuildError> {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: the closure runs in the forked child before exec. It only makes two system calls
    // (unshare, mount) with static, NUL-terminated arguments; it allocates nothing and takes no
    // lock, so it is async-signal-safe.
    unsafe {
        command.pre_exec(enter_private_mount_namespace);
    }
    tracing::info!(program, ?args, "starting image build");
    let mut child = command
        .spawn()
        .map_err(|source| BuildError::Spawn { program, source })?;
    let mut group = KillGroupOnDrop(child.id().map(|id| Pid::from_raw(id as i32)));

    let tail = Mutex::new(VecDeque::with_capacity(OUTPUT_TAIL_LINES));
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    tokio::join!(
        forward_lines(program, stdout, progress, &tail),
        forward_lines(program, stderr, progress, &tail),
    );
    let status = child
        .wait()
        .await
        .map_err(|source| BuildError::Wait { program, source })?;
    // Reaped: the group id may be reused from now on.
    group.0 = None;

    if status.success() {
        return Ok(());
    }
    let output_tail = tail
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .into_iter()
        .collect::<Vec<_>>()
        .join("\n");
    Err(BuildError::Failed {
        program,
        status,
        output_tail,
    })
}

fn enter_private_mount_namespace() -> io::Result<()> {
    // SAFETY: unshare takes a flag word and touches no memory of this process.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // Private propagation keeps mounts made in the new namespace from reaching the host's.
    // SAFETY: the target is a static NUL-terminated string; the null source, type and data
    // pointers are allowed for a propagation change.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Kills the build's process group on drop, unless the id was cleared after the build exited.
struct KillGroupOnDrop(Option<Pid>);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        if let Some(group) = self.0 {
            tracing::warn!(
                process_group = group.as_raw(),
                "image build cancelled; killing it"
            );
            // The group was created for the build by `process_group(0)`, so its id is the id of
            // the build's first process and names nothing else while that process is unreaped.
            let _ = killpg(group, Signal::SIGKILL);
        }
    }
}

async fn forward_lines(
    program: &'static str,
    stream: Option<impl AsyncRead + Unpin>,
    progress: Progress<'_>,
    tail: &Mutex<VecDeque<String>>,
) {
    let Some(stream) = stream else {
        return;
    };
    let mut lines = BufReader::new(stream).split(b'\n');
    loop {
        let line = match lines.next_segment().await {
            Ok(Some(line)) => line,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(program, %error, "failed to read build output");
                return;
            }
        };
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        tracing::info!(program, line = %text, "image build output");
        progress(text);

        let mut tail = tail.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if tail.len() == OUTPUT_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(text.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_changes_with_packages() {
        let base = DebianRecipe::default_snapshot();
        let mut extended = base.clone();
        extended.packages.push("nodejs".to_owned());
        assert_ne!(base.digest(), extended.digest());
        assert_eq!(base.digest(), DebianRecipe::default_snapshot().digest());
    }

    #[test]
    fn mmdebstrap_args_put_target_after_suite() {
        let recipe = DebianRecipe::default_snapshot();
        let args = recipe.mmdebstrap_args(Path::new("/tmp/root"));
        let suite = args.iter().position(|a| a == "bookworm").unwrap();
        assert_eq!(args[suite + 1], "/tmp/root");
        assert!(args[suite + 2].to_string_lossy().starts_with("deb "));
        assert!(
            args.iter()
                .any(|a| a.to_string_lossy().starts_with("--include=bash,"))
        );
    }
}
