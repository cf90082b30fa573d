//! Image builds from a Dockerfile subset, which is also what the SDK's declarative `Image`
//! sends.
//!
//! Each `RUN`, `COPY` and `ADD` step makes one layer. A step's cache key is the digest of its
//! parent's key (the base image's manifest digest for the first step), the instruction text
//! and, for `COPY`, the digest of the context files it reads; so `ENV`, `WORKDIR` and `USER`
//! before a step are part of its key through the chain. A finished step is kept in the
//! store as an image named [`CACHE_PREFIX`]`<key>` with the layers and configuration up to
//! it, and a later build with the same prefix reuses it and logs `CACHED`.
//!
//! `RUN` executes through a [`StepRunner`], which the runner crate implements with the
//! isolation runtime: an overlay of the image's layers with a fresh upper directory and no
//! network. The builder packs that upper directory as the step's layer.

pub mod context;
pub mod copy;
pub mod dockerfile;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use sha2::{Digest, Sha256};

use crate::pack::OwnerShift;
use crate::{Error, Image, ImageConfig, ImageStore, Progress, fault};
use copy::CopyError;
use dockerfile::{Dockerfile, InstructionKind, ParseError, expand};

/// Name prefix of the images that hold finished build steps.
pub const CACHE_PREFIX: &str = "daytona-build-cache:";

/// `PATH` of a `RUN` step whose image sets none, as Docker sets it.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One `RUN` step for a [`StepRunner`].
pub struct RunStep<'a> {
    /// Unpacked layers of the image so far, lowest first.
    pub layers: &'a [PathBuf],
    /// An empty directory that becomes the overlay's upper directory: the step's changes.
    pub upper_dir: &'a Path,
    /// A directory of the step's own, for the runner's work and run directories.
    pub scratch_dir: &'a Path,
    pub argv: Vec<String>,
    /// `NAME=value` entries.
    pub env: Vec<String>,
    pub work_dir: String,
    /// `USER` of the image: a name or uid, optionally with `:group`; root when `None`.
    pub user: Option<String>,
    /// Receives the command's output, one line per call.
    pub log: Progress<'a>,
}

/// How a `RUN` step ended.
#[derive(Debug, Clone, Copy)]
pub struct RunOutcome {
    pub exit_code: i32,
    /// How host owners in the upper directory map to the image's owners.
    pub owners: Option<OwnerShift>,
}

/// Error of a [`StepRunner`].
pub type StepRunnerError = Box<dyn std::error::Error + Send + Sync>;

/// A boxed future of [`StepRunner::run`].
pub type RunFuture<'a> =
    Pin<Box<dyn Future<Output = Result<RunOutcome, StepRunnerError>> + Send + 'a>>;

/// Runs the commands of `RUN` steps in isolation. Dropping the future must stop the command
/// and release what the step created, apart from the upper directory.
pub trait StepRunner: Send + Sync {
    fn run<'a>(&'a self, step: RunStep<'a>) -> RunFuture<'a>;
}

/// Why a build failed. The message is what the user sees as the snapshot's `errorReason`.
#[derive(Debug, thiserror::Error)]
pub enum BuildFailure {
    #[error("invalid Dockerfile: {0}")]
    Parse(#[from] ParseError),
    #[error(
        "base image {image:?} is not in this server's image store, and the build has no registry to fetch it from; import it with `daytona snapshot import --name {image} FILE` (a docker save tarball or an OCI layout), pull it with `daytona snapshot pull HOST:PORT/NAME:TAG --name {image}`, or use FROM {default}",
        default = crate::DEFAULT_SNAPSHOT
    )]
    BaseNotFound { image: String },
    #[error("step at line {line} ({instruction}): {source}")]
    Copy {
        line: usize,
        instruction: String,
        #[source]
        source: CopyError,
    },
    #[error("step at line {line} ({instruction}) failed with exit code {exit_code}")]
    StepFailed {
        line: usize,
        instruction: String,
        exit_code: i32,
    },
    #[error("step at line {line} ({instruction}) could not run: {source}")]
    Runner {
        line: usize,
        instruction: String,
        #[source]
        source: StepRunnerError,
    },
    #[error("failed to write the build's layers to the image store: {source}")]
    Store {
        #[from]
        source: Error,
    },
    #[error("failed to prepare the build's scratch directory {}", path.display())]
    Scratch {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What to build.
pub struct BuildRequest<'a> {
    /// Name of the resulting image; it must not exist yet.
    pub image_name: &'a str,
    pub dockerfile: &'a Dockerfile,
    /// The unpacked build context, when the build has one.
    pub context_dir: Option<&'a Path>,
    /// An empty directory the build may use; the caller removes it afterwards.
    pub scratch_dir: &'a Path,
}

/// The image configuration and layers as the build goes.
struct State {
    layers: Vec<PathBuf>,
    config: ImageConfig,
    key: String,
}

/// Builds `request` on its base image, which must be in `store`, and records the result
/// under `request.image_name`.
pub async fn build(
    store: &ImageStore,
    request: &BuildRequest<'_>,
    runner: &dyn StepRunner,
    log: Progress<'_>,
) -> Result<Image, BuildFailure> {
    let dockerfile = request.dockerfile;
    let total = dockerfile.instructions.len() + 1;
    log(&format!("Step 1/{total} : FROM {}", dockerfile.base));
    let base = blocking(store, {
        let name = dockerfile.base.clone();
        move |store| store.get(&name)
    })
    .await?
    .ok_or_else(|| BuildFailure::BaseNotFound {
        image: dockerfile.base.clone(),
    })?;
    let mut state = State {
        layers: base.layers,
        config: base.config,
        key: base.manifest_digest,
    };

    for (index, instruction) in dockerfile.instructions.iter().enumerate() {
        log(&format!(
            "Step {}/{total} : {}",
            index + 2,
            instruction.text
        ));
        fault::hit("build.step-started")?;
        let line = instruction.line;
        let text = &instruction.text;
        match &instruction.kind {
            InstructionKind::Env(pairs) => {
                for (name, value) in pairs {
                    let value = expand(value, &state.config.env);
                    state
                        .config
                        .env
                        .retain(|entry| !entry.starts_with(&format!("{name}=")));
                    state.config.env.push(format!("{name}={value}"));
                }
                state.key = chain(&state.key, text, "");
            }
            InstructionKind::Workdir(dir) => {
                let dir = expand(dir, &state.config.env);
                let dir = if dir.starts_with('/') {
                    dir
                } else {
                    format!("{}/{dir}", work_dir(&state.config).trim_end_matches('/'))
                };
                state.config.working_dir = Some(dir);
                state.key = chain(&state.key, text, "");
            }
            InstructionKind::User(user) => {
                state.config.user = Some(expand(user, &state.config.env));
                state.key = chain(&state.key, text, "");
            }
            InstructionKind::Entrypoint(command) => {
                state.config.entrypoint = command.argv();
                // Docker clears an inherited CMD when ENTRYPOINT changes.
                state.config.cmd.clear();
                state.key = chain(&state.key, text, "");
            }
            InstructionKind::Cmd(command) => {
                state.config.cmd = command.argv();
                state.key = chain(&state.key, text, "");
            }
            InstructionKind::Run(command) => {
                state.key = chain(&state.key, text, "");
                if reuse_cached(store, &mut state, log).await? {
                    continue;
                }
                log(" ---> Running in a build sandbox without network access");
                let step_dir = request.scratch_dir.join(format!("step-{}", index + 2));
                let upper = step_dir.join("upper");
                create_dir(&upper)?;
                let mut env = state.config.env.clone();
                if !env.iter().any(|entry| entry.starts_with("PATH=")) {
                    env.insert(0, DEFAULT_PATH.to_owned());
                }
                let step = RunStep {
                    layers: &state.layers,
                    upper_dir: &upper,
                    scratch_dir: &step_dir,
                    argv: command.argv(),
                    env,
                    work_dir: work_dir(&state.config),
                    user: state.config.user.clone(),
                    log,
                };
                let outcome = runner
                    .run(step)
                    .await
                    .map_err(|source| BuildFailure::Runner {
                        line,
                        instruction: text.clone(),
                        source,
                    })?;
                if outcome.exit_code != 0 {
                    return Err(BuildFailure::StepFailed {
                        line,
                        instruction: text.clone(),
                        exit_code: outcome.exit_code,
                    });
                }
                commit_step(store, &mut state, &upper, outcome.owners, text).await?;
                remove_dir(&step_dir);
            }
            InstructionKind::Copy {
                sources,
                destination,
                chown,
            } => {
                let copy_error = |source| BuildFailure::Copy {
                    line,
                    instruction: text.clone(),
                    source,
                };
                let context = request
                    .context_dir
                    .ok_or(CopyError::NoContext)
                    .map_err(copy_error)?;
                let sources: Vec<String> = sources
                    .iter()
                    .map(|source| expand(source, &state.config.env))
                    .collect();
                let resolved = copy::resolve_sources(context, &sources).map_err(copy_error)?;
                let digest = sources_digest(&resolved).map_err(copy_error)?;
                state.key = chain(&state.key, text, &digest);
                if reuse_cached(store, &mut state, log).await? {
                    continue;
                }
                let owner = match chown {
                    Some(value) => {
                        copy::resolve_owner(&expand(value, &state.config.env), &state.layers)
                            .map_err(copy_error)?
                    }
                    None => (0, 0),
                };
                let tree = request.scratch_dir.join(format!("step-{}", index + 2));
                create_dir(&tree)?;
                let destination = expand(destination, &state.config.env);
                let plan = copy::CopyPlan {
                    sources: &resolved,
                    destination: &destination,
                    work_dir: &work_dir(&state.config),
                    owner,
                    layers: &state.layers,
                };
                copy::write_layer(&plan, &tree).map_err(copy_error)?;
                commit_step(store, &mut state, &tree, None, text).await?;
                remove_dir(&tree);
            }
        }
    }

    // The named image: the last step's layers with the final configuration.
    let name = request.image_name.to_owned();
    let layers = state.layers.clone();
    let config = state.config.clone();
    let image = blocking(store, move |store| {
        let mut capture = store.begin_capture(&name)?;
        capture.set_config(config, "daytona image build");
        capture.commit_without_layer(&layers)
    })
    .await?;
    log(&format!("Successfully built image {}", request.image_name));
    Ok(image)
}

/// Runs a blocking store operation on the blocking pool.
async fn blocking<T: Send + 'static>(
    store: &ImageStore,
    operation: impl FnOnce(&ImageStore) -> Result<T, Error> + Send + 'static,
) -> Result<T, BuildFailure> {
    let store = store.clone();
    // A test's fault is per thread, so it travels with the operation to the blocking pool.
    #[cfg(test)]
    let fault = fault::TEST_FAULT.with(std::cell::Cell::get);
    let result = tokio::task::spawn_blocking(move || {
        #[cfg(test)]
        fault::TEST_FAULT.with(|cell| cell.set(fault));
        operation(&store)
    })
    .await
    .map_err(|source| Error::Task { source })?;
    Ok(result?)
}

/// Takes the cached image of `state.key`, if the store has it.
async fn reuse_cached(
    store: &ImageStore,
    state: &mut State,
    log: Progress<'_>,
) -> Result<bool, BuildFailure> {
    let name = cache_name(&state.key);
    let Some(image) = blocking(store, move |store| store.get(&name)).await? else {
        return Ok(false);
    };
    log(" ---> CACHED");
    state.layers = image.layers;
    Ok(true)
}

/// Packs `tree` as the step's layer and records it as the cache image of `state.key`.
async fn commit_step(
    store: &ImageStore,
    state: &mut State,
    tree: &Path,
    owners: Option<OwnerShift>,
    text: &str,
) -> Result<(), BuildFailure> {
    let name = cache_name(&state.key);
    let tree = tree.to_owned();
    let layers = state.layers.clone();
    let config = state.config.clone();
    let text = text.to_owned();
    let image = blocking(store, move |store| {
        let mut capture = match store.begin_capture(&name) {
            Ok(capture) => capture,
            // Another build finished the same step meanwhile; its layer is the same.
            Err(Error::ImageExists { .. }) => {
                return store.get(&name)?.ok_or(Error::ImageNotFound { name });
            }
            Err(error) => return Err(error),
        };
        capture.set_config(config, &text);
        capture.pack(&tree, owners)?;
        fault::hit("build.layer-written")?;
        let image = capture.commit(&layers)?;
        fault::hit("build.committed")?;
        Ok(image)
    })
    .await?;
    state.layers = image.layers;
    Ok(())
}

/// The digest of the sources of a `COPY`, in their order.
fn sources_digest(sources: &[PathBuf]) -> Result<String, CopyError> {
    let mut hasher = Sha256::new();
    for source in sources {
        let digest = context::tree_digest(source).map_err(|error| CopyError::Io {
            path: source.clone(),
            source: error,
        })?;
        hasher.update(digest);
        hasher.update([0]);
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

/// The cache key of a step after `parent`.
fn chain(parent: &str, text: &str, sources_digest: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [parent, text, sources_digest] {
        hasher.update(part);
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}

/// The store name of the cached step with `key`.
pub fn cache_name(key: &str) -> String {
    format!("{CACHE_PREFIX}{key}")
}

fn work_dir(config: &ImageConfig) -> String {
    config.working_dir.clone().unwrap_or_else(|| "/".to_owned())
}

fn create_dir(path: &Path) -> Result<(), BuildFailure> {
    std::fs::create_dir_all(path).map_err(|source| BuildFailure::Scratch {
        path: path.to_owned(),
        source,
    })
}

fn remove_dir(path: &Path) {
    if let Err(error) = std::fs::remove_dir_all(path) {
        tracing::warn!(path = %path.display(), %error, "failed to remove a build step's directory");
    }
}

#[cfg(test)]
mod tests;
