//! `POST /process/code-run`: a snippet of Python, JavaScript or TypeScript in a fresh
//! interpreter.
//!
//! The code goes to a file in `/tmp` (removed afterwards), not to the interpreter's standard
//! input, so the program's standard input stays its own.
//!
//! TypeScript runs without network access at run time: esbuild strips the types and node runs
//! the result (about 0.1 s), or else tsx, ts-node, or a Node.js that strips types itself.
//! `npx` is never used, because it may download packages.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, fchown};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use daytona_wire::ErrorBody;
use daytona_wire::toolbox::{CodeLanguage, CodeRunArtifacts, CodeRunRequest, CodeRunResponse};
use serde_json::Value;

use super::command::{CommandSpec, Outcome};
use super::{Finished, finish, timeout_from_seconds};
use crate::toolbox::error::{ApiError, JsonBody};
use crate::toolbox::state::{DEFAULT_PATH, Toolbox, find_in_path};

/// Prefix of the output lines that carry an artifact as JSON, such as
/// `{"type":"chart","value":{...}}`. These lines are removed from `result`.
const ARTIFACT_PREFIX: &str = "dtn_artifact_k39fd2:";

/// Directory of the temporary code files.
const CODE_DIR: &str = "/tmp";

/// Oldest Node.js release that runs TypeScript by stripping types
/// (`--experimental-strip-types`).
const NODE_STRIP_TYPES_VERSION: (u64, u64) = (22, 6);

/// Time allowed for `node --version`.
const VERSION_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

#[utoipa::path(post, path = "/process/code-run", tag = "process", request_body = CodeRunRequest,
    responses((status = 200, body = CodeRunResponse), (status = 400, body = ErrorBody),
        (status = 408, description = "Timed out; the process group was killed", body = ErrorBody)))]
pub async fn code_run(
    State(toolbox): State<Arc<Toolbox>>,
    JsonBody(request): JsonBody<CodeRunRequest>,
) -> Result<Json<CodeRunResponse>, ApiError> {
    let language = parse_language(&request.language)?;
    let env = toolbox.command_env(request.envs.as_ref())?;
    let timeout = timeout_from_seconds(request.timeout);

    let finished = match find_runner(&toolbox, language, &env).await? {
        None => Finished::not_started(format!(
            "{} not found in PATH: install it in the image to run {} code",
            language_program(language),
            request.language
        )),
        Some(runner) => {
            let mut script = CodeFile::create(language, &request.code, toolbox.file_owner)?;
            let (program, mut args) = runner.command(&mut script);
            args.extend(request.argv.into_iter().flatten().map(OsString::from));
            let spec = CommandSpec {
                program,
                args,
                env,
                cwd: toolbox.work_dir.clone(),
                stdin: None,
                timeout,
                output_limit: toolbox.output_limit,
            };
            let outcome = toolbox.launcher.run(spec).await;
            drop(script);
            finish(outcome, timeout)?
        }
    };

    let (result, charts) = extract_artifacts(&finished.output.combined);
    Ok(Json(CodeRunResponse {
        exit_code: finished.exit_code,
        result,
        artifacts: Some(CodeRunArtifacts { charts }),
    }))
}

fn parse_language(language: &str) -> Result<CodeLanguage, ApiError> {
    serde_json::from_value(Value::String(language.to_ascii_lowercase())).map_err(|_| {
        ApiError::bad_request(format!(
            "unsupported language {language:?}: use python, javascript or typescript"
        ))
    })
}

fn language_program(language: CodeLanguage) -> &'static str {
    match language {
        CodeLanguage::Python => "python3",
        CodeLanguage::Javascript | CodeLanguage::Typescript => "node",
    }
}

fn file_extension(language: CodeLanguage) -> &'static str {
    match language {
        CodeLanguage::Python => "py",
        CodeLanguage::Javascript => "js",
        CodeLanguage::Typescript => "ts",
    }
}

/// Shell script that runs TypeScript with esbuild and node. Arguments: esbuild, node, the code
/// file, the output path without extension, then the program's own arguments. CommonJS output
/// comes first, as ts-node would run the code, so that `require` and `__dirname` work. Code
/// that CommonJS cannot express (top-level `await`, `import.meta`) runs as an ES module.
const ESBUILD_SCRIPT: &str = r#"esbuild="$1" node="$2" source="$3" output="$4"
shift 4
options="--platform=node --sourcemap=inline --log-level=error"
if "$esbuild" "$source" --outfile="$output.cjs" --format=cjs $options --log-override:empty-import-meta=error 2>/dev/null; then
    exec "$node" --enable-source-maps "$output.cjs" "$@"
fi
"$esbuild" "$source" --outfile="$output.mjs" --format=esm $options || exit
exec "$node" --enable-source-maps "$output.mjs" "$@"
"#;

/// The programs that run a code file.
#[derive(Debug)]
enum Runner {
    /// An interpreter that takes the code file's path after `args`.
    Interpreter {
        program: PathBuf,
        args: Vec<OsString>,
    },
    /// esbuild and node, run by a shell with [`ESBUILD_SCRIPT`].
    Esbuild {
        shell: PathBuf,
        esbuild: PathBuf,
        node: PathBuf,
    },
}

impl Runner {
    /// Returns the program and the arguments that run `script`, before the program's own
    /// arguments; records the files the run will write next to it.
    fn command(self, script: &mut CodeFile) -> (PathBuf, Vec<OsString>) {
        match self {
            Self::Interpreter { program, mut args } => {
                args.push(script.path.clone().into());
                (program, args)
            }
            Self::Esbuild {
                shell,
                esbuild,
                node,
            } => {
                let output = script.path.with_extension("");
                script.outputs = ["cjs", "mjs"]
                    .iter()
                    .map(|extension| output.with_extension(extension))
                    .collect();
                let args = vec![
                    "-c".into(),
                    ESBUILD_SCRIPT.into(),
                    "daytona-typescript".into(),
                    esbuild.into(),
                    node.into(),
                    script.path.clone().into(),
                    output.into(),
                ];
                (shell, args)
            }
        }
    }
}

/// Finds the interpreter in the command's `PATH`. `Ok(None)` when Python or Node.js is
/// missing, which the response reports as a command that could not start.
async fn find_runner(
    toolbox: &Toolbox,
    language: CodeLanguage,
    env: &std::collections::BTreeMap<String, String>,
) -> Result<Option<Runner>, ApiError> {
    let path_var = env.get("PATH").map_or(DEFAULT_PATH, String::as_str);
    match language {
        CodeLanguage::Python => {
            Ok(find_in_path("python3", path_var).map(|p| interpreter(p, &["-u"])))
        }
        CodeLanguage::Javascript => Ok(find_in_path("node", path_var).map(|p| interpreter(p, &[]))),
        CodeLanguage::Typescript => find_typescript_runner(toolbox, env, path_var)
            .await
            .map(Some)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "BAD_REQUEST",
                    "no TypeScript runner installed: install esbuild (npm install -g esbuild) \
                     or tsx with Node.js, or Node.js 22.6 or newer, in the image",
                )
            }),
    }
}

fn interpreter(program: PathBuf, args: &[&str]) -> Runner {
    Runner::Interpreter {
        program,
        args: args.iter().map(OsString::from).collect(),
    }
}

/// Finds a TypeScript runner that needs no network, fastest first: esbuild with node, tsx,
/// ts-node, or a Node.js that strips types itself.
async fn find_typescript_runner(
    toolbox: &Toolbox,
    env: &std::collections::BTreeMap<String, String>,
    path_var: &str,
) -> Option<Runner> {
    let node = find_in_path("node", path_var);
    if let (Some(esbuild), Some(node), Some(shell)) =
        (find_in_path("esbuild", path_var), &node, &toolbox.shell)
    {
        return Some(Runner::Esbuild {
            shell: shell.clone(),
            esbuild,
            node: node.clone(),
        });
    }
    if let Some(tsx) = find_in_path("tsx", path_var) {
        return Some(interpreter(tsx, &[]));
    }
    if let Some(ts_node) = find_in_path("ts-node", path_var) {
        return Some(interpreter(ts_node, &["--transpile-only"]));
    }
    let node = node?;
    let version = probe_node_version(toolbox, &node, env).await?;
    (version >= NODE_STRIP_TYPES_VERSION).then(|| {
        interpreter(
            node,
            &[
                "--experimental-strip-types",
                "--disable-warning=ExperimentalWarning",
            ],
        )
    })
}

/// Runs `node --version` as a workload: the binary comes from the user's `PATH`, so it must
/// not run with the daemon's privileges.
async fn probe_node_version(
    toolbox: &Toolbox,
    node: &Path,
    env: &std::collections::BTreeMap<String, String>,
) -> Option<(u64, u64)> {
    let spec = CommandSpec {
        program: node.to_owned(),
        args: vec!["--version".into()],
        env: env.clone(),
        cwd: toolbox.work_dir.clone(),
        stdin: None,
        timeout: Some(VERSION_PROBE_TIMEOUT),
        output_limit: 1024,
    };
    match toolbox.launcher.run(spec).await {
        Outcome::Exited {
            exit_code: 0,
            output,
        } => parse_node_version(&output.stdout),
        _ => None,
    }
}

/// Parses `v22.6.0` into `(22, 6)`.
fn parse_node_version(text: &str) -> Option<(u64, u64)> {
    let mut parts = text.trim().strip_prefix('v')?.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// A code file in `/tmp` that belongs to the sandbox user; removed when dropped, with the
/// files the run wrote next to it.
struct CodeFile {
    path: PathBuf,
    /// Files the runner may write, such as esbuild's output.
    outputs: Vec<PathBuf>,
}

impl CodeFile {
    fn create(
        language: CodeLanguage,
        code: &str,
        owner: Option<(u32, u32)>,
    ) -> Result<Self, ApiError> {
        let name = format!(
            "daytona-code-{}.{}",
            uuid::Uuid::new_v4().simple(),
            file_extension(language)
        );
        let path = Path::new(CODE_DIR).join(name);
        let write_failed = |error: std::io::Error| {
            ApiError::internal(
                format!("failed to write the code to {CODE_DIR}: {error}"),
                &error,
            )
        };

        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(write_failed)?;
        let code_file = Self {
            path,
            outputs: Vec::new(),
        };
        if let Some((uid, gid)) = owner {
            fchown(&file, Some(uid), Some(gid)).map_err(write_failed)?;
        }
        file.write_all(code.as_bytes()).map_err(write_failed)?;
        Ok(code_file)
    }
}

impl Drop for CodeFile {
    fn drop(&mut self) {
        if let Err(error) = fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), %error, "failed to remove a code file");
        }
        for output in &self.outputs {
            match fs::remove_file(output) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(path = %output.display(), %error, "failed to remove a code output");
                }
                _ => {}
            }
        }
    }
}

/// Removes artifact lines from the output and collects the values of the chart artifacts.
fn extract_artifacts(output: &str) -> (String, Vec<Value>) {
    let mut result = String::with_capacity(output.len());
    let mut charts = Vec::new();
    for line in output.split_inclusive('\n') {
        let Some(payload) = line.strip_prefix(ARTIFACT_PREFIX) else {
            result.push_str(line);
            continue;
        };
        match serde_json::from_str::<Value>(payload.trim_end()) {
            Ok(Value::Object(mut artifact)) if artifact.get("type") == Some(&"chart".into()) => {
                if let Some(value) = artifact.remove("value") {
                    charts.push(value);
                }
            }
            _ => tracing::debug!("ignoring an artifact line that is not a chart"),
        }
    }
    (result, charts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_are_removed_and_charts_collected() {
        let output = "before\n\
            dtn_artifact_k39fd2:{\"type\":\"chart\",\"value\":{\"type\":\"line\",\"title\":\"T\"}}\n\
            after\n\
            dtn_artifact_k39fd2:not json\n";
        let (result, charts) = extract_artifacts(output);
        assert_eq!(result, "before\nafter\n");
        assert_eq!(charts, [serde_json::json!({"type": "line", "title": "T"})]);
    }

    #[test]
    fn artifact_prefix_only_counts_at_line_start() {
        let output = "x dtn_artifact_k39fd2:{}\n";
        let (result, charts) = extract_artifacts(output);
        assert_eq!(result, output);
        assert!(charts.is_empty());
    }

    #[test]
    fn node_versions_parse() {
        assert_eq!(parse_node_version("v22.6.0\n"), Some((22, 6)));
        assert_eq!(parse_node_version("v20.20.2"), Some((20, 20)));
        assert_eq!(parse_node_version("node 20"), None);
    }

    #[test]
    fn languages_parse_case_insensitively() {
        assert_eq!(parse_language("Python").unwrap(), CodeLanguage::Python);
        assert_eq!(
            parse_language("typescript").unwrap(),
            CodeLanguage::Typescript
        );
        assert!(parse_language("ruby").is_err());
    }
}
