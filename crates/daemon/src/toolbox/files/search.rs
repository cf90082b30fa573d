//! `GET /files/find` (lines containing a text) and `GET /files/search` (names matching a glob).
//!
//! Both walk the tree with limits: a cap on results, on depth and on entries visited, and
//! they skip `.git` and `node_modules` unless `includeSkippedDirs=true`. Find also skips
//! binary files (a NUL byte in the first 8 KiB, as grep decides) and files larger than
//! `maxFileSize`. A result cut by a limit carries `X-Daytona-Truncated: true` and
//! `X-Daytona-Truncated-Limit` naming the limit.

use std::fs;
use std::io::Read;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use daytona_wire::ErrorBody;
use daytona_wire::files::{Match, SearchFilesResponse};
use globset::{GlobBuilder, GlobMatcher};
use memchr::memmem;
use serde::Deserialize;

use super::walk::{WalkLimits, WalkSummary, walk};
use super::{
    FileAction, blocking, checked_path, file_error, invalid_path, log_truncated, truncation_headers,
};
use crate::toolbox::error::{ApiError, QueryParams};
use crate::toolbox::state::Toolbox;

/// Default of `maxResults`.
const DEFAULT_MAX_RESULTS: usize = 10_000;
/// Largest `maxResults` accepted.
const MAX_RESULTS_CAP: usize = 100_000;
/// Default of `maxDepth`.
const DEFAULT_MAX_DEPTH: usize = 64;
/// Entries visited before a walk stops, whatever it found.
const MAX_ENTRIES: usize = 1_000_000;
/// Files larger than this are not searched unless `maxFileSize` allows them, in bytes.
const DEFAULT_MAX_FILE_SIZE: u64 = 10 * 1024 * 1024;
/// Largest `maxFileSize` accepted: a searched file is read whole into memory.
const MAX_FILE_SIZE_CAP: u64 = 100 * 1024 * 1024;
/// Bytes at the start of a file in which a NUL byte marks it as binary.
const BINARY_PROBE: usize = 8 * 1024;
/// Longest `content` of a match, in bytes; a longer line is cut.
const MAX_LINE: usize = 4096;
/// Header counting the files find left out because of their size.
const SKIPPED_FILES_HEADER: &str = "x-daytona-skipped-files";

/// Query of both routes.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchQuery {
    path: Option<String>,
    pattern: Option<String>,
    /// Most results returned (default 10000, at most 100000).
    max_results: Option<u64>,
    /// Deepest directory level searched, 1 being the path's own entries (default 64).
    max_depth: Option<u64>,
    /// Larger files are skipped by find, in bytes (default 10 MiB, at most 100 MiB).
    max_file_size: Option<u64>,
    /// Also search `.git` and `node_modules` directories.
    #[serde(default)]
    include_skipped_dirs: bool,
}

/// The checked parameters of a search.
struct Search {
    root: PathBuf,
    /// The path as requested, the base of the paths in the results.
    shown_root: String,
    pattern: String,
    max_results: usize,
    max_file_size: u64,
    limits: WalkLimits,
}

impl Search {
    fn from_query(toolbox: &Toolbox, query: SearchQuery) -> Result<Self, ApiError> {
        let requested = match query.path.as_deref() {
            None | Some("") => return Err(invalid_path("missing query parameter path")),
            Some(path) => path.to_owned(),
        };
        let root = checked_path(toolbox, &requested)?;
        let pattern = match query.pattern {
            Some(pattern) if !pattern.is_empty() => pattern,
            _ => return Err(ApiError::bad_request("missing query parameter pattern")),
        };
        let max_results = bounded(
            "maxResults",
            query.max_results,
            DEFAULT_MAX_RESULTS as u64,
            1,
            MAX_RESULTS_CAP as u64,
        )?;
        let max_depth = bounded(
            "maxDepth",
            query.max_depth,
            DEFAULT_MAX_DEPTH as u64,
            1,
            u64::MAX,
        )?;
        let max_file_size = bounded(
            "maxFileSize",
            query.max_file_size,
            DEFAULT_MAX_FILE_SIZE,
            0,
            MAX_FILE_SIZE_CAP,
        )?;
        Ok(Self {
            root,
            shown_root: requested,
            pattern,
            max_results: usize::try_from(max_results).unwrap_or(usize::MAX),
            max_file_size,
            limits: WalkLimits {
                max_depth: usize::try_from(max_depth).unwrap_or(usize::MAX),
                max_entries: MAX_ENTRIES,
                include_skipped_dirs: query.include_skipped_dirs,
                detect_depth_cut: true,
            },
        })
    }

    /// Returns the path of an entry in the form the request named the root.
    fn shown(&self, relative: &str) -> String {
        join_shown(&self.shown_root, relative)
    }

    /// Headers and a log line for a result that a limit cut short.
    fn cut_headers(&self, route: &'static str, results_full: bool, walk: WalkSummary) -> HeaderMap {
        let limit = if results_full {
            Some(("maxResults", self.max_results))
        } else if walk.hit_entry_limit {
            Some(("maxEntries", MAX_ENTRIES))
        } else if walk.hit_depth_limit {
            Some(("maxDepth", self.limits.max_depth))
        } else {
            None
        };
        match limit {
            Some((name, value)) => {
                log_truncated(route, &self.root, name, value);
                truncation_headers(name, value)
            }
            None => HeaderMap::new(),
        }
    }
}

/// Reads an optional numeric limit: `default` when absent, an error outside `min..=max`.
fn bounded(
    name: &str,
    value: Option<u64>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ApiError> {
    match value {
        None => Ok(default),
        Some(value) if (min..=max).contains(&value) => Ok(value),
        Some(value) => Err(ApiError::bad_request(format!(
            "invalid {name} {value}: expected a number from {min} to {max}"
        ))),
    }
}

/// Joins a relative path to the root as the request wrote it: `.` and `./` add nothing, and
/// a trailing `/` is not doubled.
fn join_shown(root: &str, relative: &str) -> String {
    if relative.is_empty() {
        return root.to_owned();
    }
    match root.trim_end_matches('/') {
        "" if root.starts_with('/') => format!("/{relative}"),
        "" | "." => relative.to_owned(),
        base => format!("{base}/{relative}"),
    }
}

/// Finds lines that contain `pattern` as plain text (not a regular expression), in the file
/// at `path` or in every file below the directory at `path`. Matches come in path order, then
/// line order, one per line.
#[utoipa::path(get, path = "/files/find", tag = "files",
    params(("path" = String, Query, description = "File or directory to search"),
        ("pattern" = String, Query, description = "Text to find"),
        ("maxResults" = Option<usize>, Query, description = "Most matches returned (default 10000, at most 100000)"),
        ("maxDepth" = Option<usize>, Query, description = "Deepest directory level searched (default 64)"),
        ("maxFileSize" = Option<u64>, Query, description = "Larger files are skipped, in bytes (default 10 MiB, at most 100 MiB)"),
        ("includeSkippedDirs" = Option<bool>, Query, description = "Also search .git and node_modules")),
    responses((status = 200, body = Vec<Match>, headers(
            ("X-Daytona-Truncated" = String, description = "`true` when a limit cut the result"),
            ("X-Daytona-Truncated-Limit" = String, description = "The limit that cut the result, such as `maxResults=10000`"),
            ("X-Daytona-Skipped-Files" = String, description = "Number of files skipped because of their size"))),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn find(
    State(toolbox): State<Arc<Toolbox>>,
    QueryParams(query): QueryParams<SearchQuery>,
) -> Result<(HeaderMap, Json<Vec<Match>>), ApiError> {
    let search = Search::from_query(&toolbox, query)?;
    blocking(move || find_matches(&search)).await
}

fn find_matches(search: &Search) -> Result<(HeaderMap, Json<Vec<Match>>), ApiError> {
    let finder = memmem::Finder::new(search.pattern.as_bytes());
    let metadata = fs::metadata(&search.root)
        .map_err(|error| file_error(FileAction::Read, &search.root, error))?;
    let mut matches = Vec::new();
    let mut skipped_large = 0u64;

    if !metadata.is_dir() {
        // One match past the limit shows that the limit cut the result.
        let mut on_match = |line, content| {
            matches.push(Match {
                file: search.shown_root.clone(),
                line,
                content,
            });
            matches.len() <= search.max_results
        };
        if metadata.len() > search.max_file_size {
            skipped_large += 1;
        } else {
            search_file(&search.root, &finder, &mut on_match);
        }
        let full = matches.len() > search.max_results;
        matches.truncate(search.max_results);
        let mut headers = search.cut_headers("find", full, WalkSummary::default());
        add_skipped_header(&mut headers, skipped_large);
        return Ok((headers, Json(matches)));
    }

    let mut full = false;
    let summary = walk(&search.root, search.limits, |entry| {
        if !entry.metadata.is_file() {
            return ControlFlow::Continue(());
        }
        if entry.metadata.len() > search.max_file_size {
            skipped_large += 1;
            return ControlFlow::Continue(());
        }
        let shown = search.shown(&entry.relative);
        search_file(&entry.path, &finder, &mut |line, content| {
            matches.push(Match {
                file: shown.clone(),
                line,
                content,
            });
            full = matches.len() > search.max_results;
            !full
        });
        if full {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .map_err(|error| file_error(FileAction::Read, &search.root, error))?;

    matches.truncate(search.max_results);
    let mut headers = search.cut_headers("find", full, summary);
    add_skipped_header(&mut headers, skipped_large);
    Ok((headers, Json(matches)))
}

fn add_skipped_header(headers: &mut HeaderMap, skipped: u64) {
    if skipped > 0 {
        headers.insert(SKIPPED_FILES_HEADER, HeaderValue::from(skipped));
    }
}

/// Calls `on_match` with the number and text of each line of the file that contains the
/// pattern, until it returns `false`. Binary and unreadable files have no matches.
fn search_file(
    path: &Path,
    finder: &memmem::Finder<'_>,
    on_match: &mut dyn FnMut(u64, String) -> bool,
) {
    let Ok(mut file) = fs::File::open(path) else {
        return;
    };
    let mut content = Vec::new();
    if file.read_to_end(&mut content).is_err() {
        return;
    }
    let probe = &content[..content.len().min(BINARY_PROBE)];
    if memchr::memchr(0, probe).is_some() {
        return;
    }

    let mut line_number = 1u64;
    let mut counted_to = 0usize;
    let mut next_line_start = 0usize;
    for found in finder.find_iter(&content) {
        if found < next_line_start {
            // Another occurrence on a line already reported.
            continue;
        }
        line_number += memchr::memchr_iter(b'\n', &content[counted_to..found]).count() as u64;
        let start = memchr::memrchr(b'\n', &content[..found]).map_or(0, |newline| newline + 1);
        let end =
            memchr::memchr(b'\n', &content[found..]).map_or(content.len(), |offset| found + offset);
        counted_to = found;
        next_line_start = end + 1;
        if !on_match(line_number, line_text(&content[start..end])) {
            return;
        }
    }
}

/// The text of a line: without a carriage return at its end, cut at [`MAX_LINE`] bytes, and
/// with invalid UTF-8 replaced.
fn line_text(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let cut = &line[..line.len().min(MAX_LINE)];
    let mut text = String::from_utf8_lossy(cut).into_owned();
    if cut.len() < line.len() && text.ends_with('\u{fffd}') {
        // The cut split a character.
        text.pop();
    }
    text
}

/// Lists the files and directories below `path` whose names match a glob pattern (`*`, `?`,
/// `[abc]`, `{a,b}`). A pattern without `/` is matched against each entry's name, at any
/// depth, so `*.py` finds every Python file. A pattern with `/` is matched against the path
/// relative to `path`, where `*` stays within one directory and `**` crosses directories
/// (`src/**/*.rs`).
#[utoipa::path(get, path = "/files/search", tag = "files",
    params(("path" = String, Query, description = "Directory to search"),
        ("pattern" = String, Query, description = "Glob pattern"),
        ("maxResults" = Option<usize>, Query, description = "Most paths returned (default 10000, at most 100000)"),
        ("maxDepth" = Option<usize>, Query, description = "Deepest directory level searched (default 64)"),
        ("includeSkippedDirs" = Option<bool>, Query, description = "Also search .git and node_modules")),
    responses((status = 200, body = SearchFilesResponse, headers(
            ("X-Daytona-Truncated" = String, description = "`true` when a limit cut the result"),
            ("X-Daytona-Truncated-Limit" = String, description = "The limit that cut the result"))),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn search(
    State(toolbox): State<Arc<Toolbox>>,
    QueryParams(query): QueryParams<SearchQuery>,
) -> Result<(HeaderMap, Json<SearchFilesResponse>), ApiError> {
    let search = Search::from_query(&toolbox, query)?;
    let glob = NameGlob::new(&search.pattern)?;
    blocking(move || search_names(&search, &glob)).await
}

fn search_names(
    search: &Search,
    glob: &NameGlob,
) -> Result<(HeaderMap, Json<SearchFilesResponse>), ApiError> {
    let metadata = fs::metadata(&search.root)
        .map_err(|error| file_error(FileAction::List, &search.root, error))?;
    if !metadata.is_dir() {
        return Err(invalid_path(format!(
            "{} is not a directory",
            search.root.display()
        )));
    }

    let mut files = Vec::new();
    let mut full = false;
    let summary = walk(&search.root, search.limits, |entry| {
        if glob.matches(&entry.relative, &entry.name.to_string_lossy()) {
            files.push(search.shown(&entry.relative));
            // One match past the limit shows that the limit cut the result.
            full = files.len() > search.max_results;
        }
        if full {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .map_err(|error| file_error(FileAction::List, &search.root, error))?;

    files.truncate(search.max_results);
    let headers = search.cut_headers("search", full, summary);
    Ok((headers, Json(SearchFilesResponse { files })))
}

/// A glob matched against names, or against relative paths when it contains `/`.
struct NameGlob {
    matcher: GlobMatcher,
    whole_path: bool,
}

impl NameGlob {
    fn new(pattern: &str) -> Result<Self, ApiError> {
        let glob = GlobBuilder::new(pattern)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|error| {
                ApiError::bad_request(format!("invalid glob pattern {pattern:?}: {error}"))
            })?;
        Ok(Self {
            matcher: glob.compile_matcher(),
            whole_path: pattern.contains('/'),
        })
    }

    fn matches(&self, relative: &str, name: &str) -> bool {
        if self.whole_path {
            self.matcher.is_match(relative)
        } else {
            self.matcher.is_match(name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(content: &[u8], pattern: &str) -> Vec<(u64, String)> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, content).unwrap();
        let finder = memmem::Finder::new(pattern.as_bytes());
        let mut found = Vec::new();
        search_file(&path, &finder, &mut |line, text| {
            found.push((line, text));
            true
        });
        found
    }

    #[test]
    fn find_reports_each_matching_line_once() {
        assert_eq!(
            lines_of(b"a TODO\nnothing\nTODO TODO\r\n\nlast TODO", "TODO"),
            [
                (1, "a TODO".to_owned()),
                (3, "TODO TODO".to_owned()),
                (5, "last TODO".to_owned())
            ]
        );
    }

    #[test]
    fn find_is_literal_and_skips_binary_files() {
        assert_eq!(lines_of(b"a.b\naxb\n", "a.b"), [(1, "a.b".to_owned())]);
        assert!(lines_of(b"TODO\0binary", "TODO").is_empty());
    }

    #[test]
    fn long_lines_are_cut() {
        let mut content = vec![b'x'; MAX_LINE + 100];
        content.extend_from_slice(b"needle");
        let found = lines_of(&content, "needle");
        assert_eq!(found[0].1.len(), MAX_LINE);
    }

    #[test]
    fn names_and_paths_match_globs() {
        let by_name = NameGlob::new("*.py").unwrap();
        assert!(by_name.matches("src/deep/a.py", "a.py"));
        assert!(!by_name.matches("src/a.pyc", "a.pyc"));

        let by_path = NameGlob::new("src/*.rs").unwrap();
        assert!(by_path.matches("src/main.rs", "main.rs"));
        assert!(!by_path.matches("src/bin/x.rs", "x.rs"));
        let recursive = NameGlob::new("src/**/*.rs").unwrap();
        assert!(recursive.matches("src/bin/x.rs", "x.rs"));

        let alternatives = NameGlob::new("test_{a,b}?").unwrap();
        assert!(alternatives.matches("test_a1", "test_a1"));
        assert!(NameGlob::new("[").is_err());
    }

    #[test]
    fn shown_paths_keep_the_requested_form() {
        assert_eq!(join_shown("/tmp/dir", "a/b"), "/tmp/dir/a/b");
        assert_eq!(join_shown("/tmp/dir/", "a"), "/tmp/dir/a");
        assert_eq!(join_shown("/", "a"), "/a");
        assert_eq!(join_shown(".", "a"), "a");
        assert_eq!(join_shown("./", "a"), "a");
        assert_eq!(join_shown("work/src", "a.py"), "work/src/a.py");
        assert_eq!(join_shown("work/src", ""), "work/src");
    }

    #[test]
    fn limits_are_checked() {
        assert_eq!(bounded("maxResults", None, 5, 1, 10).unwrap(), 5);
        assert_eq!(bounded("maxResults", Some(10), 5, 1, 10).unwrap(), 10);
        assert!(bounded("maxResults", Some(0), 5, 1, 10).is_err());
        assert!(bounded("maxResults", Some(11), 5, 1, 10).is_err());
    }
}
