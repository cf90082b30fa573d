//! `POST /process/code-run`: a snippet of Python, JavaScript or TypeScript in a fresh
//! interpreter.
//!
//! The code goes to a file in `/tmp` (removed afterwards), not to the interpreter's standard
//! input, so the program's standard input stays its own.

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
            let script = CodeFile::create(language, &request.code, toolbox.file_owner)?;
            let mut args = runner.args;
            args.push(script.path.clone().into());
            args.extend(request.argv.into_iter().flatten().map(OsString::from));
            let spec = CommandSpec {
                program: runner.program,
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

/// The interpreter of a code file: the file's path is appended to `args`.
#[derive(Debug)]
struct Runner {
    program: PathBuf,
    args: Vec<OsString>,
}

/// Finds the interpreter in the command's `PATH`. `Ok(None)` when Python or Node.js is
/// missing, which the response reports as a command that could not start.
async fn find_runner(
    toolbox: &Toolbox,
    language: CodeLanguage,
    env: &std::collections::BTreeMap<String, String>,
) -> Result<Option<Runner>, ApiError> {
    let path_var = env.get("PATH").map_or(DEFAULT_PATH, String::as_str);
    let runner = |program: PathBuf, args: &[&str]| Runner {
        program,
        args: args.iter().map(OsString::from).collect(),
    };
    match language {
        CodeLanguage::Python => Ok(find_in_path("python3", path_var).map(|p| runner(p, &["-u"]))),
        CodeLanguage::Javascript => Ok(find_in_path("node", path_var).map(|p| runner(p, &[]))),
        CodeLanguage::Typescript => find_typescript_runner(toolbox, env, path_var)
            .await
            .map(|(program, args)| Some(runner(program, args)))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "BAD_REQUEST",
                    "no TypeScript runner installed: install tsx (npm install -g tsx) or \
                     ts-node, or Node.js 22.6 or newer, in the image",
                )
            }),
    }
}

/// Finds a TypeScript runner that needs no network: tsx, ts-node, or a Node.js that strips
/// types itself. `npx` is never used, because it may download packages.
async fn find_typescript_runner(
    toolbox: &Toolbox,
    env: &std::collections::BTreeMap<String, String>,
    path_var: &str,
) -> Option<(PathBuf, &'static [&'static str])> {
    if let Some(tsx) = find_in_path("tsx", path_var) {
        return Some((tsx, &[]));
    }
    if let Some(ts_node) = find_in_path("ts-node", path_var) {
        return Some((ts_node, &["--transpile-only"]));
    }
    let node = find_in_path("node", path_var)?;
    let version = probe_node_version(toolbox, &node, env).await?;
    (version >= NODE_STRIP_TYPES_VERSION).then_some((
        node,
        &[
            "--experimental-strip-types",
            "--disable-warning=ExperimentalWarning",
        ],
    ))
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

/// A code file in `/tmp` that belongs to the sandbox user; removed when dropped.
struct CodeFile {
    path: PathBuf,
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
        let code_file = Self { path };
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
