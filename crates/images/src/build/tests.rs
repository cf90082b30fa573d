//! Builder tests with a step runner that interprets a tiny command language instead of
//! starting sandboxes: `write PATH CONTENT` creates a file in the upper directory, `exit N`
//! fails with code N.

use std::fs;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::fault::{Action, TEST_FAULT};

/// Environment, work directory and user of a step.
type StepSettings = (Vec<String>, String, Option<String>);

#[derive(Default)]
struct FakeRunner {
    runs: AtomicUsize,
    /// Environment and work directory of the last step.
    last: Mutex<Option<StepSettings>>,
}

impl StepRunner for FakeRunner {
    fn run<'a>(&'a self, step: RunStep<'a>) -> RunFuture<'a> {
        Box::pin(async move {
            self.runs.fetch_add(1, Ordering::SeqCst);
            *self.last.lock().unwrap() =
                Some((step.env.clone(), step.work_dir.clone(), step.user.clone()));
            let script = step.argv.last().cloned().unwrap_or_default();
            let words: Vec<&str> = script.split_whitespace().collect();
            match words.as_slice() {
                ["write", path, content] => {
                    let target = step.upper_dir.join(path.trim_start_matches('/'));
                    fs::create_dir_all(target.parent().unwrap())?;
                    fs::write(target, content)?;
                    (step.log)(&format!("wrote {path}"));
                    Ok(RunOutcome {
                        exit_code: 0,
                        owners: None,
                    })
                }
                ["exit", code] => Ok(RunOutcome {
                    exit_code: code.parse()?,
                    owners: None,
                }),
                _ => Err(format!("unknown fake command {script:?}").into()),
            }
        })
    }
}

fn root() -> bool {
    nix::unistd::geteuid().is_root()
}

struct Fixture {
    dir: tempfile::TempDir,
    store: ImageStore,
    runner: FakeRunner,
    lines: Mutex<Vec<String>>,
}

impl Fixture {
    /// A store with a one-layer image `base`, and a context with `app/main.py`.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(&dir.path().join("store")).unwrap();
        let tree = dir.path().join("base");
        fs::create_dir_all(tree.join("etc")).unwrap();
        fs::write(tree.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        let mut capture = store.begin_capture("base").unwrap();
        capture.set_config(
            ImageConfig {
                env: vec!["BASE=1".into()],
                ..ImageConfig::default()
            },
            "test base",
        );
        capture.pack(&tree, None).unwrap();
        capture.commit(&[]).unwrap();
        fs::create_dir_all(dir.path().join("context/app")).unwrap();
        fs::write(dir.path().join("context/app/main.py"), "print(1)\n").unwrap();
        Self {
            dir,
            store,
            runner: FakeRunner::default(),
            lines: Mutex::new(Vec::new()),
        }
    }

    async fn build(&self, name: &str, content: &str) -> Result<Image, BuildFailure> {
        let dockerfile = dockerfile::parse(content)?;
        let scratch = self.dir.path().join(format!("scratch-{name}"));
        fs::create_dir_all(&scratch).unwrap();
        let context = self.dir.path().join("context");
        let request = BuildRequest {
            image_name: name,
            dockerfile: &dockerfile,
            context_dir: Some(&context),
            scratch_dir: &scratch,
        };
        self.lines.lock().unwrap().clear();
        let log = |line: &str| self.lines.lock().unwrap().push(line.to_owned());
        let result = build(&self.store, &request, &self.runner, &log).await;
        fs::remove_dir_all(&scratch).unwrap();
        result
    }

    fn cached_lines(&self) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.contains("CACHED"))
            .count()
    }

    fn layer_count(&self) -> usize {
        fs::read_dir(self.store.root().join("layers/sha256"))
            .map(|entries| entries.count())
            .unwrap_or(0)
    }
}

const DOCKERFILE: &str = "FROM base\nENV GREETING=hello\nRUN write /a one\nWORKDIR /srv\nCOPY app/main.py main.py\nUSER daytona\nCMD [\"python3\", \"main.py\"]\n";

#[tokio::test]
async fn build_sets_config_and_layers() {
    if !root() {
        eprintln!("SKIPPED: the image store keeps numeric owners and needs root");
        return;
    }
    let fixture = Fixture::new();
    let image = fixture.build("app", DOCKERFILE).await.unwrap();
    assert_eq!(image.layers.len(), 3);
    assert_eq!(
        fs::read_to_string(image.layers[1].join("a")).unwrap(),
        "one"
    );
    assert_eq!(
        fs::read_to_string(image.layers[2].join("srv/main.py")).unwrap(),
        "print(1)\n"
    );
    assert_eq!(image.config.env, ["BASE=1", "GREETING=hello"]);
    assert_eq!(image.config.working_dir.as_deref(), Some("/srv"));
    assert_eq!(image.config.user.as_deref(), Some("daytona"));
    assert_eq!(image.config.cmd, ["python3", "main.py"]);
    let (env, work_dir, user) = fixture.runner.last.lock().unwrap().clone().unwrap();
    assert!(env.contains(&"GREETING=hello".to_owned()));
    assert!(env.iter().any(|entry| entry.starts_with("PATH=")));
    assert_eq!(work_dir, "/");
    assert_eq!(user, None);
    let lines = fixture.lines.lock().unwrap().clone();
    assert_eq!(lines[0], "Step 1/7 : FROM base");
    assert!(lines.contains(&"wrote /a".to_owned()), "{lines:?}");
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("Successfully built image app")
    );
}

#[tokio::test]
async fn rebuild_reuses_cached_steps() {
    if !root() {
        eprintln!("SKIPPED: the image store keeps numeric owners and needs root");
        return;
    }
    let fixture = Fixture::new();
    let first = fixture.build("first", DOCKERFILE).await.unwrap();
    assert_eq!(fixture.runner.runs.load(Ordering::SeqCst), 1);
    assert_eq!(fixture.cached_lines(), 0);

    let second = fixture.build("second", DOCKERFILE).await.unwrap();
    assert_eq!(
        fixture.runner.runs.load(Ordering::SeqCst),
        1,
        "RUN ran again"
    );
    assert_eq!(fixture.cached_lines(), 2);
    assert_eq!(first.layers, second.layers);

    // A changed context file invalidates the COPY but not the RUN before it.
    fs::write(fixture.dir.path().join("context/app/main.py"), "print(2)\n").unwrap();
    let third = fixture.build("third", DOCKERFILE).await.unwrap();
    assert_eq!(fixture.runner.runs.load(Ordering::SeqCst), 1);
    assert_eq!(fixture.cached_lines(), 1);
    assert_eq!(third.layers[1], first.layers[1]);
    assert_ne!(third.layers[2], first.layers[2]);

    // A changed ENV before the RUN changes every key after it.
    let changed = DOCKERFILE.replace("hello", "bye");
    fixture.build("fourth", &changed).await.unwrap();
    assert_eq!(fixture.runner.runs.load(Ordering::SeqCst), 2);
    assert_eq!(fixture.cached_lines(), 0);
}

#[tokio::test]
async fn missing_base_names_the_image() {
    if !root() {
        eprintln!("SKIPPED: the image store keeps numeric owners and needs root");
        return;
    }
    let fixture = Fixture::new();
    let error = fixture
        .build("app", "FROM python:3.12-slim-bookworm\nRUN exit 0\n")
        .await
        .unwrap_err();
    assert!(matches!(error, BuildFailure::BaseNotFound { .. }));
    let message = error.to_string();
    assert!(
        message.contains("\"python:3.12-slim-bookworm\""),
        "{message}"
    );
    assert!(message.contains("daytona snapshot import"), "{message}");
    assert!(message.contains("daytona snapshot pull"), "{message}");
}

#[tokio::test]
async fn failed_and_unsafe_steps_fail_the_build() {
    if !root() {
        eprintln!("SKIPPED: the image store keeps numeric owners and needs root");
        return;
    }
    let fixture = Fixture::new();
    let error = fixture
        .build("a", "FROM base\nRUN exit 3\n")
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            BuildFailure::StepFailed {
                line: 2,
                exit_code: 3,
                ..
            }
        ),
        "{error}"
    );
    fs::write(fixture.dir.path().join("secret"), "s").unwrap();
    for source in ["../secret", "/../secret"] {
        let error = fixture
            .build("b", &format!("FROM base\nCOPY {source} /x\n"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                BuildFailure::Copy {
                    source: CopyError::SourceOutside { .. },
                    ..
                }
            ),
            "{source}: {error}"
        );
    }
    let error = fixture
        .build("c", "FROM base\nCOPY missing /x\n")
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("not in the build context"),
        "{error}"
    );
    assert!(fixture.store.get("a").unwrap().is_none());
    assert!(fixture.store.get("b").unwrap().is_none());
}

#[tokio::test]
async fn faults_leave_no_half_layer() {
    if !root() {
        eprintln!("SKIPPED: the image store keeps numeric owners and needs root");
        return;
    }
    for step in [
        "build.step-started",
        "build.layer-written",
        "build.committed",
    ] {
        let fixture = Fixture::new();
        let layers_before = fixture.layer_count();
        TEST_FAULT.with(|fault| fault.set(Some((step, Action::Fail))));
        let failed = fixture.build("app", "FROM base\nRUN write /a one\n").await;
        TEST_FAULT.with(|fault| fault.set(None));
        assert!(
            matches!(
                failed,
                Err(BuildFailure::Store {
                    source: Error::FaultInjected { .. }
                })
            ),
            "{step}: {failed:?}"
        );
        assert!(fixture.store.get("app").unwrap().is_none(), "{step}");
        assert!(
            fs::read_dir(fixture.store.journal_dir())
                .unwrap()
                .next()
                .is_none(),
            "{step}: a journal is left"
        );
        assert!(
            fs::read_dir(fixture.store.root().join("tmp"))
                .unwrap()
                .next()
                .is_none(),
            "{step}: a temporary is left"
        );
        // Only a completed step adds a layer, and then as a whole cached image.
        let cached = fixture
            .store
            .list()
            .unwrap()
            .into_iter()
            .filter(|image| image.name.starts_with(CACHE_PREFIX))
            .count();
        assert_eq!(fixture.layer_count(), layers_before + cached, "{step}");
        let expected_cached = usize::from(step == "build.committed");
        assert_eq!(cached, expected_cached, "{step}");

        // The build succeeds once the fault is gone.
        fixture
            .build("app", "FROM base\nRUN write /a one\n")
            .await
            .unwrap();
    }
}
