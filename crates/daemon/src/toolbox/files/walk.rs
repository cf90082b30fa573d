//! A bounded, depth-first walk of a directory tree, shared by the listing, find and search
//! routes.
//!
//! Entries come in name order, each directory's entries before the next sibling's, so that
//! results are the same from one call to the next. Symbolic links are reported but not
//! followed, which keeps a link cycle from looping. Directories that cannot be read are
//! skipped. The walk stops at a depth limit and after a number of entries.

use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::io;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

/// Directory names a search skips unless asked not to: version control data and installed
/// dependencies, which are large and rarely what a search is for.
pub const SKIPPED_DIRS: [&str; 2] = [".git", "node_modules"];

/// One entry of a walk.
pub struct Entry {
    pub path: PathBuf,
    /// Path relative to the root, with `/` separators.
    pub relative: String,
    pub name: OsString,
    /// Metadata of the entry itself, not of a symbolic link's target.
    pub metadata: Metadata,
    /// 1 for the root's own entries.
    pub depth: usize,
}

/// Limits of one walk.
#[derive(Debug, Clone, Copy)]
pub struct WalkLimits {
    /// Deepest level of entries visited; 1 visits only the root's own entries.
    pub max_depth: usize,
    /// Most entries visited before the walk stops.
    pub max_entries: usize,
    /// Whether to descend into [`SKIPPED_DIRS`].
    pub include_skipped_dirs: bool,
    /// Whether to find out if the depth limit left entries unvisited, which opens each
    /// directory at the limit once more.
    pub detect_depth_cut: bool,
}

/// Summary of a walk: the limits it reached and the directories it could not read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WalkSummary {
    /// The walk stopped at `max_entries` with entries left.
    pub hit_entry_limit: bool,
    /// A directory at `max_depth` had entries that were not visited; only detected with
    /// `detect_depth_cut`.
    pub hit_depth_limit: bool,
    /// Directories that could not be read.
    pub unreadable_dirs: usize,
}

/// Walks the tree under the directory `root`, calling `visit` for every entry until it
/// returns `Break` or a limit is reached. Fails only when `root` itself cannot be read.
pub fn walk(
    root: &Path,
    limits: WalkLimits,
    mut visit: impl FnMut(&Entry) -> ControlFlow<()>,
) -> io::Result<WalkSummary> {
    let mut summary = WalkSummary::default();
    let mut visited = 0usize;
    // Entries still to visit, the next one last. A directory's entries are pushed when it is
    // visited, so they come before its next sibling.
    let mut queue: Vec<Entry> = read_sorted(root, "", 1)?;
    queue.reverse();

    while let Some(entry) = queue.pop() {
        if visited == limits.max_entries {
            summary.hit_entry_limit = true;
            break;
        }
        visited += 1;
        if visit(&entry).is_break() {
            break;
        }
        if !entry.metadata.is_dir() || is_skipped(&entry, limits) {
            continue;
        }
        if entry.depth >= limits.max_depth {
            if limits.detect_depth_cut
                && fs::read_dir(&entry.path).is_ok_and(|mut dir| dir.next().is_some())
            {
                summary.hit_depth_limit = true;
            }
            continue;
        }
        match read_sorted(&entry.path, &entry.relative, entry.depth + 1) {
            Ok(children) => queue.extend(children.into_iter().rev()),
            Err(_) => summary.unreadable_dirs += 1,
        }
    }
    Ok(summary)
}

fn is_skipped(entry: &Entry, limits: WalkLimits) -> bool {
    !limits.include_skipped_dirs && SKIPPED_DIRS.iter().any(|name| entry.name == *name)
}

/// Reads a directory's entries, sorted by name. Entries that vanish while being read are
/// left out.
fn read_sorted(dir: &Path, relative_dir: &str, depth: usize) -> io::Result<Vec<Entry>> {
    let mut entries: Vec<Entry> = fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let metadata = entry.metadata().ok()?;
            let name = entry.file_name();
            let relative = if relative_dir.is_empty() {
                name.to_string_lossy().into_owned()
            } else {
                format!("{relative_dir}/{}", name.to_string_lossy())
            };
            Some(Entry {
                path: entry.path(),
                relative,
                name,
                metadata,
                depth,
            })
        })
        .collect();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for path in ["b/d/e", "a", ".git/objects", "node_modules/pkg"] {
            fs::create_dir_all(root.join(path)).unwrap();
        }
        for file in ["a/1.txt", "b/2.txt", "b/d/e/3.txt", "c.txt", ".git/HEAD"] {
            fs::write(root.join(file), "x").unwrap();
        }
        std::os::unix::fs::symlink(root, root.join("b/loop")).unwrap();
        dir
    }

    fn limits(max_depth: usize, max_entries: usize, include: bool) -> WalkLimits {
        WalkLimits {
            max_depth,
            max_entries,
            include_skipped_dirs: include,
            detect_depth_cut: true,
        }
    }

    fn visit_all(root: &Path, limits: WalkLimits) -> (Vec<String>, WalkSummary) {
        let mut seen = Vec::new();
        let summary = walk(root, limits, |entry| {
            seen.push(entry.relative.clone());
            ControlFlow::Continue(())
        })
        .unwrap();
        (seen, summary)
    }

    #[test]
    fn walk_order_skips_vendored_dirs() {
        let dir = tree();
        let (seen, summary) = visit_all(dir.path(), limits(100, 1000, false));
        assert_eq!(
            seen,
            [
                ".git",
                "a",
                "a/1.txt",
                "b",
                "b/2.txt",
                "b/d",
                "b/d/e",
                "b/d/e/3.txt",
                "b/loop",
                "c.txt",
                "node_modules"
            ]
        );
        assert_eq!(summary, WalkSummary::default());
    }

    #[test]
    fn walk_can_include_vendored_dirs() {
        let dir = tree();
        let (seen, _) = visit_all(dir.path(), limits(100, 1000, true));
        assert!(seen.contains(&".git/HEAD".to_owned()));
        assert!(seen.contains(&"node_modules/pkg".to_owned()));
    }

    #[test]
    fn walk_stops_at_depth_and_entry_limits() {
        let dir = tree();
        let (seen, summary) = visit_all(dir.path(), limits(1, 1000, false));
        assert_eq!(seen, [".git", "a", "b", "c.txt", "node_modules"]);
        assert!(summary.hit_depth_limit);

        let (seen, summary) = visit_all(dir.path(), limits(100, 3, false));
        assert_eq!(seen, [".git", "a", "a/1.txt"]);
        assert!(summary.hit_entry_limit);
    }
}
