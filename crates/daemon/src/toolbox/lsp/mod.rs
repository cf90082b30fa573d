//! Language servers behind the `/lsp/*` routes: `pylsp` for Python and
//! `typescript-language-server --stdio` for TypeScript and JavaScript.
//!
//! One server runs per language and project path, started by `POST /lsp/start` through the
//! launcher as the sandbox user, in the project directory. TypeScript and JavaScript share
//! the TypeScript server of a project. Every other route needs a started server and fails with
//! `LSP_SERVER_NOT_INITIALIZED` (400) without one. Documents that a request names but no client
//! opened are opened from disk first.

mod client;
mod convert;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use daytona_wire::ErrorBody;
use daytona_wire::lsp::{
    CompletionList, LspCompletionParams, LspDocumentRequest, LspServerRequest, LspSymbol,
    LspWorkspaceSymbolsQuery,
};
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::client::{LanguageServer, LspError, METHOD_NOT_FOUND};
pub use self::convert::path_to_uri;
use super::error::{ApiError, ErrorChain, JsonBody, QueryParams};
use super::state::{DEFAULT_PATH, Toolbox, find_in_path};

/// Maximum number of language servers running at once.
pub const MAX_SERVERS: usize = 16;

/// Largest document sent to a language server, in bytes.
const MAX_DOCUMENT: u64 = 16 * 1024 * 1024;

/// Error code of a request for a server that is not running.
const NOT_INITIALIZED: &str = "LSP_SERVER_NOT_INITIALIZED";

/// The language server programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ServerKind {
    Python,
    TypeScript,
}

impl ServerKind {
    fn parse(language_id: &str) -> Result<Self, ApiError> {
        match language_id.to_ascii_lowercase().as_str() {
            "python" => Ok(Self::Python),
            "typescript" | "javascript" | "typescriptreact" | "javascriptreact" => {
                Ok(Self::TypeScript)
            }
            _ => Err(ApiError::bad_request(format!(
                "unsupported languageId {language_id:?}: use python, typescript or javascript"
            ))),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Python => "python",
            Self::TypeScript => "typescript",
        }
    }

    fn program(self) -> &'static str {
        match self {
            Self::Python => "pylsp",
            Self::TypeScript => "typescript-language-server",
        }
    }

    fn args(self) -> &'static [&'static str] {
        match self {
            Self::Python => &[],
            Self::TypeScript => &["--stdio"],
        }
    }

    fn install_hint(self) -> &'static str {
        match self {
            Self::Python => "install python3-pylsp (Debian) or python-lsp-server (pip)",
            Self::TypeScript => {
                "install it with npm install -g typescript typescript-language-server"
            }
        }
    }
}

type ServerKey = (ServerKind, PathBuf);

/// The running language servers.
#[derive(Debug, Default)]
pub struct LspServers {
    servers: Mutex<BTreeMap<ServerKey, Arc<LanguageServer>>>,
    /// Held while a server starts, so that concurrent starts of one server start it once.
    starting: tokio::sync::Mutex<()>,
}

impl LspServers {
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<ServerKey, Arc<LanguageServer>>> {
        self.servers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns the running server for `key`, forgetting one that exited.
    fn get(&self, key: &ServerKey) -> Option<Arc<LanguageServer>> {
        let mut map = self.map();
        let server = map.get(key)?.clone();
        if server.has_exited() {
            map.remove(key);
            tracing::warn!(language = key.0.name(), project = %key.1.display(), "language server exited");
            return None;
        }
        Some(server)
    }
}

pub fn routes() -> OpenApiRouter<Arc<Toolbox>> {
    OpenApiRouter::new()
        .routes(routes!(start))
        .routes(routes!(stop))
        .routes(routes!(did_open))
        .routes(routes!(did_close))
        .routes(routes!(document_symbols))
        .routes(routes!(workspace_symbols))
        .routes(routes!(completions))
}

/// Resolves the server key of a request; `pathToProject` may be relative to the work
/// directory.
fn server_key(
    toolbox: &Toolbox,
    language_id: &str,
    path_to_project: &str,
) -> Result<ServerKey, ApiError> {
    let kind = ServerKind::parse(language_id)?;
    if path_to_project.is_empty() {
        return Err(ApiError::bad_request("pathToProject is required"));
    }
    Ok((kind, toolbox.resolve(path_to_project)))
}

/// Returns the running server of a request, or `LSP_SERVER_NOT_INITIALIZED`.
fn running_server(
    toolbox: &Toolbox,
    language_id: &str,
    path_to_project: &str,
) -> Result<(ServerKey, Arc<LanguageServer>), ApiError> {
    let key = server_key(toolbox, language_id, path_to_project)?;
    let server = toolbox.lsp.get(&key).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            NOT_INITIALIZED,
            format!(
                "no {} language server is running for {}: start one with POST /lsp/start",
                key.0.name(),
                key.1.display()
            ),
        )
    })?;
    Ok((key, server))
}

fn lsp_error(error: LspError) -> ApiError {
    match &error {
        LspError::Timeout { .. } => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "REQUEST_TIMEOUT",
            error.to_string(),
        ),
        LspError::TooManyDocuments => ApiError::bad_request(error.to_string()),
        _ => {
            let message = ErrorChain(&error).to_string();
            ApiError::internal(message, &error)
        }
    }
}

/// Starts the language server of a language and project, unless it is running already.
#[utoipa::path(post, path = "/lsp/start", tag = "lsp", request_body = LspServerRequest,
    responses((status = 200, description = "The server is running"),
        (status = 400, body = ErrorBody), (status = 500, body = ErrorBody)))]
async fn start(
    State(toolbox): State<Arc<Toolbox>>,
    JsonBody(request): JsonBody<LspServerRequest>,
) -> Result<(), ApiError> {
    let key = server_key(&toolbox, &request.language_id, &request.path_to_project)?;
    if !key.1.is_dir() {
        return Err(ApiError::bad_request(format!(
            "project path {} is not a directory",
            key.1.display()
        )));
    }

    let _starting = toolbox.lsp.starting.lock().await;
    if toolbox.lsp.get(&key).is_some() {
        return Ok(());
    }
    if toolbox.lsp.map().len() >= MAX_SERVERS {
        return Err(ApiError::bad_request(format!(
            "too many language servers ({MAX_SERVERS}): stop one with POST /lsp/stop"
        )));
    }

    let (kind, project) = &key;
    let env = toolbox.command_env(None)?;
    let path_var = env.get("PATH").map_or(DEFAULT_PATH, String::as_str);
    let program = find_in_path(kind.program(), path_var).ok_or_else(|| {
        ApiError::bad_request(format!(
            "{} not found in PATH ({path_var}): {}",
            kind.program(),
            kind.install_hint()
        ))
    })?;
    let server = LanguageServer::start(&toolbox.launcher, program, kind.args(), project, env)
        .await
        .map_err(lsp_error)?;
    tracing::info!(language = kind.name(), project = %project.display(), pid = server.pid(), "language server started");
    toolbox.lsp.map().insert(key, Arc::new(server));
    Ok(())
}

/// Stops the language server of a language and project.
#[utoipa::path(post, path = "/lsp/stop", tag = "lsp", request_body = LspServerRequest,
    responses((status = 200, description = "The server stopped"),
        (status = 400, body = ErrorBody)))]
async fn stop(
    State(toolbox): State<Arc<Toolbox>>,
    JsonBody(request): JsonBody<LspServerRequest>,
) -> Result<(), ApiError> {
    let (key, _) = running_server(&toolbox, &request.language_id, &request.path_to_project)?;
    let Some(server) = toolbox.lsp.map().remove(&key) else {
        return Ok(());
    };
    server.stop().await;
    tracing::info!(language = key.0.name(), project = %key.1.display(), "language server stopped");
    Ok(())
}

/// Reads a document for the server; the path comes from the request's URI.
async fn read_document(path: &Path) -> Result<String, ApiError> {
    let shown = path.display();
    let metadata = tokio::fs::metadata(path)
        .await
        .map_err(|error| file_error(path, &error))?;
    if !metadata.is_file() {
        return Err(ApiError::bad_request(format!("{shown} is not a file")));
    }
    if metadata.len() > MAX_DOCUMENT {
        return Err(ApiError::bad_request(format!(
            "{shown} is larger than {MAX_DOCUMENT} bytes, the limit for language server documents"
        )));
    }
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|error| file_error(path, &error))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn file_error(path: &Path, error: &std::io::Error) -> ApiError {
    let shown = path.display();
    match error.kind() {
        std::io::ErrorKind::NotFound => ApiError::new(
            StatusCode::NOT_FOUND,
            "FILE_NOT_FOUND",
            format!("file not found: {shown}"),
        ),
        std::io::ErrorKind::PermissionDenied => ApiError::new(
            StatusCode::FORBIDDEN,
            "FILE_ACCESS_DENIED",
            format!("permission denied reading {shown}"),
        ),
        _ => ApiError::internal(format!("failed to read {shown}"), error),
    }
}

/// A document of a request: its path and the URI that identifies it to the server.
struct Document {
    path: PathBuf,
    uri: String,
}

impl Document {
    fn new(uri: &str, project: &Path) -> Self {
        let path = convert::uri_to_path(uri, project);
        let uri = path_to_uri(&path);
        Self { path, uri }
    }

    /// Sends the document's current text to the server.
    async fn open(&self, server: &LanguageServer, language_id: &str) -> Result<(), ApiError> {
        let text = read_document(&self.path).await?;
        let language = convert::document_language(&self.path, language_id);
        server
            .open_document(&self.uri, &language, text)
            .await
            .map_err(lsp_error)
    }

    /// Opens the document unless it is open already.
    async fn ensure_open(
        &self,
        server: &LanguageServer,
        language_id: &str,
    ) -> Result<(), ApiError> {
        if server.is_open(&self.uri) {
            return Ok(());
        }
        self.open(server, language_id).await
    }
}

/// Tells the server that a document is open, with its text read from disk. Opening an open
/// document again sends its current text.
#[utoipa::path(post, path = "/lsp/did-open", tag = "lsp", request_body = LspDocumentRequest,
    responses((status = 200, description = "The server has the document"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn did_open(
    State(toolbox): State<Arc<Toolbox>>,
    JsonBody(request): JsonBody<LspDocumentRequest>,
) -> Result<(), ApiError> {
    let (key, server) = running_server(&toolbox, &request.language_id, &request.path_to_project)?;
    Document::new(&request.uri, &key.1)
        .open(&server, &request.language_id)
        .await
}

/// Tells the server that a document is closed.
#[utoipa::path(post, path = "/lsp/did-close", tag = "lsp", request_body = LspDocumentRequest,
    responses((status = 200, description = "The server closed the document"),
        (status = 400, body = ErrorBody)))]
async fn did_close(
    State(toolbox): State<Arc<Toolbox>>,
    JsonBody(request): JsonBody<LspDocumentRequest>,
) -> Result<(), ApiError> {
    let (key, server) = running_server(&toolbox, &request.language_id, &request.path_to_project)?;
    let document = Document::new(&request.uri, &key.1);
    server
        .close_document(&document.uri)
        .await
        .map_err(lsp_error)
}

/// Lists the symbols of a document.
#[utoipa::path(get, path = "/lsp/document-symbols", tag = "lsp",
    params(LspDocumentRequest),
    responses((status = 200, body = Vec<LspSymbol>), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn document_symbols(
    State(toolbox): State<Arc<Toolbox>>,
    QueryParams(request): QueryParams<LspDocumentRequest>,
) -> Result<Json<Vec<LspSymbol>>, ApiError> {
    let (key, server) = running_server(&toolbox, &request.language_id, &request.path_to_project)?;
    let document = Document::new(&request.uri, &key.1);
    document.ensure_open(&server, &request.language_id).await?;
    let result = server
        .request(
            "textDocument/documentSymbol",
            json!({"textDocument": {"uri": document.uri}}),
        )
        .await
        .map_err(lsp_error)?;
    Ok(Json(convert::symbols(&result, &document.uri)))
}

/// Searches the symbols of the project. For a server without workspace symbols (pylsp), the
/// symbols of the open documents whose names contain the query, ignoring case, stand in.
#[utoipa::path(get, path = "/lsp/workspacesymbols", tag = "lsp",
    params(LspWorkspaceSymbolsQuery),
    responses((status = 200, body = Vec<LspSymbol>), (status = 400, body = ErrorBody)))]
async fn workspace_symbols(
    State(toolbox): State<Arc<Toolbox>>,
    QueryParams(request): QueryParams<LspWorkspaceSymbolsQuery>,
) -> Result<Json<Vec<LspSymbol>>, ApiError> {
    let (_, server) = running_server(&toolbox, &request.language_id, &request.path_to_project)?;
    if server.supports("workspaceSymbolProvider") {
        match server
            .request("workspace/symbol", json!({"query": request.query}))
            .await
        {
            Ok(result) => return Ok(Json(convert::symbols(&result, ""))),
            Err(LspError::Rpc { code, .. }) if code == METHOD_NOT_FOUND => {}
            Err(error) => return Err(lsp_error(error)),
        }
    }
    open_document_symbols(&server, &request.query)
        .await
        .map(Json)
}

async fn open_document_symbols(
    server: &LanguageServer,
    query: &str,
) -> Result<Vec<LspSymbol>, ApiError> {
    let query = query.to_lowercase();
    let mut symbols = Vec::new();
    for uri in server.open_documents() {
        let result = server
            .request(
                "textDocument/documentSymbol",
                json!({"textDocument": {"uri": uri}}),
            )
            .await
            .map_err(lsp_error)?;
        symbols.extend(
            convert::symbols(&result, &uri)
                .into_iter()
                .filter(|symbol| symbol.name.to_lowercase().contains(&query)),
        );
    }
    Ok(symbols)
}

/// Returns the completions at a position of a document.
#[utoipa::path(post, path = "/lsp/completions", tag = "lsp", request_body = LspCompletionParams,
    responses((status = 200, body = CompletionList), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn completions(
    State(toolbox): State<Arc<Toolbox>>,
    JsonBody(request): JsonBody<LspCompletionParams>,
) -> Result<Json<CompletionList>, ApiError> {
    let (key, server) = running_server(&toolbox, &request.language_id, &request.path_to_project)?;
    let document = Document::new(&request.uri, &key.1);
    document.ensure_open(&server, &request.language_id).await?;
    let mut params = json!({
        "textDocument": {"uri": document.uri},
        "position": request.position,
    });
    if let Some(context) = &request.context {
        params["context"] = serde_json::to_value(context).expect("a context always serializes");
    }
    let result: Value = server
        .request("textDocument/completion", params)
        .await
        .map_err(lsp_error)?;
    Ok(Json(convert::completion_list(&result)))
}
