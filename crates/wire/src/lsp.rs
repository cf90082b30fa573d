//! Types of the language server routes: `/lsp/*`.
//!
//! `uri` values are `file://` URIs of absolute paths; `languageId` is `python`, `typescript`
//! or `javascript`.

use serde::{Deserialize, Serialize};

/// Body of `POST /lsp/start` and `POST /lsp/stop`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LspServerRequest {
    pub language_id: String,
    pub path_to_project: String,
}

/// Body of `POST /lsp/did-open` and `POST /lsp/did-close`; also the query of
/// `GET /lsp/document-symbols`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct LspDocumentRequest {
    pub language_id: String,
    pub path_to_project: String,
    pub uri: String,
}

/// Query of `GET /lsp/workspacesymbols`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct LspWorkspaceSymbolsQuery {
    /// Text that symbol names are matched against; empty matches every symbol.
    #[serde(default)]
    pub query: String,
    pub language_id: String,
    pub path_to_project: String,
}

/// A position in a document: zero-based line and UTF-16 character offset, as in LSP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LspPosition {
    pub line: u32,
    pub character: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LspRange {
    pub start: LspPosition,
    pub end: LspPosition,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LspLocation {
    pub uri: String,
    pub range: LspRange,
}

/// A symbol of `GET /lsp/document-symbols` and `GET /lsp/workspacesymbols`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LspSymbol {
    pub name: String,
    /// LSP `SymbolKind` (5 class, 6 method, 12 function, 13 variable, ...).
    pub kind: u32,
    pub location: LspLocation,
}

/// The trigger of a completion request.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompletionContext {
    /// LSP `CompletionTriggerKind`: 1 invoked, 2 trigger character, 3 incomplete re-trigger.
    pub trigger_kind: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_character: Option<String>,
}

/// Body of `POST /lsp/completions`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LspCompletionParams {
    pub language_id: String,
    pub path_to_project: String,
    pub uri: String,
    pub position: LspPosition,
    #[serde(default)]
    pub context: Option<CompletionContext>,
}

/// One completion. `documentation` is an LSP `MarkupContent` object (`{kind, value}`), never a
/// bare string, because the Python client declares it as an object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompletionItem {
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documentation: Option<MarkupContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort_text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insert_text: Option<String>,
}

/// LSP `MarkupContent`: `kind` is `plaintext` or `markdown`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MarkupContent {
    pub kind: String,
    pub value: String,
}

/// Response of `POST /lsp/completions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompletionList {
    pub is_incomplete: bool,
    pub items: Vec<CompletionItem>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_item_documentation_is_an_object() {
        let item = CompletionItem {
            label: "path".to_owned(),
            kind: Some(9),
            detail: None,
            documentation: Some(MarkupContent {
                kind: "plaintext".to_owned(),
                value: "os.path".to_owned(),
            }),
            sort_text: None,
            filter_text: None,
            insert_text: None,
        };
        let json = serde_json::to_value(CompletionList {
            is_incomplete: false,
            items: vec![item],
        })
        .unwrap();
        assert_eq!(json["isIncomplete"], false);
        assert_eq!(
            json["items"][0],
            serde_json::json!({"label": "path", "kind": 9, "documentation": {"kind": "plaintext", "value": "os.path"}})
        );
    }

    #[test]
    fn completion_params_tolerate_unknown_fields() {
        let params: LspCompletionParams = serde_json::from_str(
            r#"{"languageId":"python","pathToProject":"/p","uri":"file:///p/a.py",
                "position":{"line":1,"character":2},"context":{"triggerKind":1},"extra":0}"#,
        )
        .unwrap();
        assert_eq!(
            params.position,
            LspPosition {
                line: 1,
                character: 2
            }
        );
        assert_eq!(params.context.unwrap().trigger_kind, 1);
    }
}
