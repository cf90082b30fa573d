//! Conversions between LSP results and the toolbox's wire shapes, and between paths and
//! `file://` URIs.

use std::path::{Path, PathBuf};

use daytona_wire::lsp::{
    CompletionItem, CompletionList, LspLocation, LspPosition, LspRange, LspSymbol, MarkupContent,
};
use serde_json::Value;

/// Bytes kept as they are in a URI path; every other byte is percent-encoded.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'/')
}

/// Converts an absolute path to a `file://` URI, percent-encoding what URIs do not allow.
pub fn path_to_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut uri = String::from("file://");
    for &byte in path.as_os_str().as_bytes() {
        if is_unreserved(byte) {
            uri.push(byte as char);
        } else {
            uri.push_str(&format!("%{byte:02X}"));
        }
    }
    uri
}

/// Decodes `%XX` escapes; malformed escapes stay as they are.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%'
            && let Some(hex) = text.get(index + 1..index + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            decoded.push(byte);
            index += 3;
            continue;
        }
        decoded.push(bytes[index]);
        index += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// Resolves a request's `uri` to an absolute path. The SDKs send `file://` followed by the
/// path as given, so a relative path (`file://src/a.py`) is resolved against the project. A
/// bare path without the scheme is accepted too.
pub fn uri_to_path(uri: &str, project: &Path) -> PathBuf {
    let path = uri
        .strip_prefix("file://")
        .map_or_else(|| uri.to_owned(), percent_decode);
    project.join(path).components().collect()
}

/// Returns a URI as the SDKs expect it in responses: `file://` and the plain path.
fn display_uri(uri: &str) -> String {
    match uri.strip_prefix("file://") {
        Some(path) => format!("file://{}", percent_decode(path)),
        None => uri.to_owned(),
    }
}

/// Picks the LSP language id of a document from its extension, falling back to `requested`.
pub fn document_language(path: &Path, requested: &str) -> String {
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let language = match extension {
        "py" | "pyi" => "python",
        "ts" | "mts" | "cts" => "typescript",
        "tsx" => "typescriptreact",
        "js" | "mjs" | "cjs" => "javascript",
        "jsx" => "javascriptreact",
        _ => return requested.to_ascii_lowercase(),
    };
    language.to_owned()
}

fn position(value: Option<&Value>) -> LspPosition {
    let field = |name| {
        value
            .and_then(|value| value.get(name))
            .and_then(Value::as_u64)
            .and_then(|number| u32::try_from(number).ok())
            .unwrap_or(0)
    };
    LspPosition {
        line: field("line"),
        character: field("character"),
    }
}

fn range(value: Option<&Value>) -> LspRange {
    LspRange {
        start: position(value.and_then(|value| value.get("start"))),
        end: position(value.and_then(|value| value.get("end"))),
    }
}

fn symbol_kind(value: &Value) -> u32 {
    value
        .get("kind")
        .and_then(Value::as_u64)
        .and_then(|kind| u32::try_from(kind).ok())
        .unwrap_or(0)
}

/// Converts a `textDocument/documentSymbol` or `workspace/symbol` result. Servers return
/// flat `SymbolInformation` (which has a `location`), or with `DocumentSymbol` trees (a
/// `range` and `children`) whose symbols lie in `document_uri`; trees are flattened, parents
/// first.
pub fn symbols(result: &Value, document_uri: &str) -> Vec<LspSymbol> {
    let mut symbols = Vec::new();
    for item in result.as_array().into_iter().flatten() {
        collect_symbol(item, document_uri, &mut symbols);
    }
    symbols
}

fn collect_symbol(item: &Value, document_uri: &str, symbols: &mut Vec<LspSymbol>) {
    let Some(name) = item.get("name").and_then(Value::as_str) else {
        return;
    };
    let location = match item.get("location") {
        // A workspace symbol may leave out the range; the whole file is then meant.
        Some(location) => LspLocation {
            uri: display_uri(
                location
                    .get("uri")
                    .and_then(Value::as_str)
                    .unwrap_or(document_uri),
            ),
            range: range(location.get("range")),
        },
        None => LspLocation {
            uri: display_uri(document_uri),
            range: range(item.get("range")),
        },
    };
    symbols.push(LspSymbol {
        name: name.to_owned(),
        kind: symbol_kind(item),
        location,
    });
    for child in item
        .get("children")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        collect_symbol(child, document_uri, symbols);
    }
}

/// Converts a `textDocument/completion` result: a `CompletionList`, an array of items, or
/// `null`.
pub fn completion_list(result: &Value) -> CompletionList {
    let (is_incomplete, items) = match result {
        Value::Array(items) => (false, items.as_slice()),
        Value::Object(list) => (
            list.get("isIncomplete")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            list.get("items")
                .and_then(Value::as_array)
                .map_or(&[][..], Vec::as_slice),
        ),
        _ => (false, &[][..]),
    };
    CompletionList {
        is_incomplete,
        items: items.iter().filter_map(completion_item).collect(),
    }
}

fn completion_item(item: &Value) -> Option<CompletionItem> {
    let text = |name| item.get(name).and_then(Value::as_str).map(str::to_owned);
    Some(CompletionItem {
        label: text("label")?,
        kind: item
            .get("kind")
            .and_then(Value::as_u64)
            .and_then(|kind| u32::try_from(kind).ok()),
        detail: text("detail"),
        documentation: item.get("documentation").and_then(markup),
        sort_text: text("sortText"),
        filter_text: text("filterText"),
        insert_text: text("insertText"),
    })
}

/// Converts LSP documentation (a string, `MarkupContent` or a `MarkedString`) to
/// `MarkupContent`, the object the SDKs require.
fn markup(documentation: &Value) -> Option<MarkupContent> {
    match documentation {
        Value::String(text) => Some(MarkupContent {
            kind: "plaintext".to_owned(),
            value: text.clone(),
        }),
        Value::Object(object) => {
            let value = object.get("value")?.as_str()?.to_owned();
            match (object.get("kind"), object.get("language")) {
                (Some(kind), _) => Some(MarkupContent {
                    kind: kind.as_str().unwrap_or("plaintext").to_owned(),
                    value,
                }),
                (None, Some(language)) => Some(MarkupContent {
                    kind: "markdown".to_owned(),
                    value: format!("```{}\n{value}\n```", language.as_str().unwrap_or("")),
                }),
                (None, None) => Some(MarkupContent {
                    kind: "plaintext".to_owned(),
                    value,
                }),
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn uris_round_trip_paths_with_spaces() {
        let path = Path::new("/home/daytona/my project/a#b.py");
        let uri = path_to_uri(path);
        assert_eq!(uri, "file:///home/daytona/my%20project/a%23b.py");
        assert_eq!(uri_to_path(&uri, Path::new("/x")), path);
        assert_eq!(display_uri(&uri), "file:///home/daytona/my project/a#b.py");
    }

    #[test]
    fn relative_uris_resolve_against_the_project() {
        let project = Path::new("/home/daytona/proj");
        assert_eq!(
            uri_to_path("file://src/main.py", project),
            Path::new("/home/daytona/proj/src/main.py")
        );
        assert_eq!(
            uri_to_path("file:///abs/main.py", project),
            Path::new("/abs/main.py")
        );
        assert_eq!(
            uri_to_path("./main.py", project),
            Path::new("/home/daytona/proj/main.py")
        );
    }

    #[test]
    fn symbol_information_keeps_its_location() {
        let result = json!([{"name": "f", "kind": 12, "containerName": null, "location": {
            "uri": "file:///p/a%20b.py",
            "range": {"start": {"line": 1, "character": 0}, "end": {"line": 2, "character": 4}}}}]);
        let symbols = symbols(&result, "file:///p/other.py");
        assert_eq!(symbols.len(), 1);
        assert_eq!(symbols[0].name, "f");
        assert_eq!(symbols[0].kind, 12);
        assert_eq!(symbols[0].location.uri, "file:///p/a b.py");
        assert_eq!(symbols[0].location.range.end.character, 4);
    }

    #[test]
    fn document_symbol_trees_are_flattened() {
        let result = json!([{"name": "C", "kind": 5,
            "range": {"start": {"line": 0, "character": 0}, "end": {"line": 3, "character": 0}},
            "selectionRange": {"start": {"line": 0, "character": 6}, "end": {"line": 0, "character": 7}},
            "children": [{"name": "m", "kind": 6,
                "range": {"start": {"line": 1, "character": 2}, "end": {"line": 2, "character": 0}},
                "selectionRange": {"start": {"line": 1, "character": 6}, "end": {"line": 1, "character": 7}}}]}]);
        let symbols = symbols(&result, "file:///p/a.ts");
        let names: Vec<&str> = symbols.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["C", "m"]);
        assert_eq!(symbols[1].location.uri, "file:///p/a.ts");
        assert_eq!(symbols[1].location.range.start.line, 1);
    }

    #[test]
    fn completion_documentation_becomes_markup() {
        let list = completion_list(&json!({"isIncomplete": true, "items": [
            {"label": "a", "documentation": "plain"},
            {"label": "b", "documentation": {"kind": "markdown", "value": "**b**"}},
            {"label": "c", "documentation": {"language": "python", "value": "c()"}},
            {"kind": 3}
        ]}));
        assert!(list.is_incomplete);
        assert_eq!(list.items.len(), 3);
        assert_eq!(
            list.items[0].documentation,
            Some(MarkupContent {
                kind: "plaintext".to_owned(),
                value: "plain".to_owned()
            })
        );
        assert_eq!(
            list.items[1].documentation.as_ref().unwrap().kind,
            "markdown"
        );
        assert_eq!(
            list.items[2].documentation.as_ref().unwrap().value,
            "```python\nc()\n```"
        );
    }

    #[test]
    fn completion_array_and_null_results() {
        let list = completion_list(&json!([{"label": "x", "kind": 6}]));
        assert!(!list.is_incomplete);
        assert_eq!(list.items[0].kind, Some(6));
        assert!(completion_list(&Value::Null).items.is_empty());
    }

    #[test]
    fn language_follows_the_extension() {
        assert_eq!(
            document_language(Path::new("a.tsx"), "typescript"),
            "typescriptreact"
        );
        assert_eq!(
            document_language(Path::new("a.js"), "typescript"),
            "javascript"
        );
        assert_eq!(document_language(Path::new("Makefile"), "Python"), "python");
    }
}
