//! The layer of a `COPY` or `ADD` step: files of the build context placed under their
//! destination in a fresh tree, which becomes the step's layer.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt, lchown, symlink};
use std::path::{Path, PathBuf};

use super::context::normal_path;

/// Why a `COPY` cannot be carried out.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(
        "COPY source {source_path:?} is not in the build context; add the file to the image's context (add_local_file, add_local_dir) or fix the path"
    )]
    SourceMissing { source_path: String },
    #[error("COPY source {source_path:?} leaves the build context")]
    SourceOutside { source_path: String },
    #[error(
        "COPY needs a build context, but the build has none; upload the files with the SDK (add_local_file, add_local_dir)"
    )]
    NoContext,
    #[error("invalid --chown value {value:?}: {reason}")]
    Chown { value: String, reason: String },
    #[error("invalid COPY destination {destination:?}: it must not leave the image's root")]
    Destination { destination: String },
    #[error("failed to copy {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Resolves `sources` (paths of the build context) to paths under `context`; a source that
/// is a symbolic link is followed, but only to a path inside the context.
pub fn resolve_sources(context: &Path, sources: &[String]) -> Result<Vec<PathBuf>, CopyError> {
    let root = context.canonicalize().map_err(|source| CopyError::Io {
        path: context.to_owned(),
        source,
    })?;
    sources
        .iter()
        .map(|source| {
            let outside = || CopyError::SourceOutside {
                source_path: source.clone(),
            };
            let relative =
                normal_path(Path::new(source.trim_start_matches('/'))).ok_or_else(outside)?;
            let resolved = root.join(relative).canonicalize().map_err(|error| {
                if error.kind() == io::ErrorKind::NotFound {
                    CopyError::SourceMissing {
                        source_path: source.clone(),
                    }
                } else {
                    CopyError::Io {
                        path: root.join(source),
                        source: error,
                    }
                }
            })?;
            if !resolved.starts_with(&root) {
                return Err(outside());
            }
            Ok(resolved)
        })
        .collect()
}

/// What a `COPY` step writes.
pub struct CopyPlan<'a> {
    pub sources: &'a [PathBuf],
    pub destination: &'a str,
    /// Working directory of the image, for a relative destination.
    pub work_dir: &'a str,
    pub owner: (u32, u32),
    /// The image's layers so far, lowest first: existing directories keep their owner and
    /// mode in the new layer, and a destination that is a directory there receives files.
    pub layers: &'a [PathBuf],
}

/// Writes the step's layer tree into the empty directory `out`.
pub fn write_layer(plan: &CopyPlan<'_>, out: &Path) -> Result<(), CopyError> {
    let absolute = if plan.destination.starts_with('/') {
        plan.destination.to_owned()
    } else {
        format!(
            "{}/{}",
            plan.work_dir.trim_end_matches('/'),
            plan.destination
        )
    };
    let relative = normal_path(Path::new(absolute.trim_start_matches('/'))).ok_or_else(|| {
        CopyError::Destination {
            destination: plan.destination.to_owned(),
        }
    })?;
    let into_directory = plan.destination.ends_with('/')
        || plan.sources.len() > 1
        || relative.as_os_str().is_empty()
        || lower_is_dir(plan.layers, &relative);

    for source in plan.sources {
        let metadata = fs::metadata(source).map_err(|error| io_error(source, error))?;
        let target = if metadata.is_dir() || !into_directory {
            relative.clone()
        } else {
            relative.join(source.file_name().unwrap_or_default())
        };
        let parent = if metadata.is_dir() {
            target.as_path()
        } else {
            target.parent().unwrap_or(Path::new(""))
        };
        create_dirs(out, parent, plan.layers)?;
        if metadata.is_dir() {
            for entry in fs::read_dir(source).map_err(|error| io_error(source, error))? {
                let entry = entry.map_err(|error| io_error(source, error))?;
                copy_tree(
                    &entry.path(),
                    &out.join(&target).join(entry.file_name()),
                    plan.owner,
                )?;
            }
        } else {
            copy_tree(source, &out.join(&target), plan.owner)?;
        }
    }
    Ok(())
}

/// Copies `source` to `dest` without following links inside it, owned by `owner`.
fn copy_tree(source: &Path, dest: &Path, owner: (u32, u32)) -> Result<(), CopyError> {
    let metadata = fs::symlink_metadata(source).map_err(|error| io_error(source, error))?;
    let result = if metadata.is_dir() {
        fs::create_dir_all(dest).map_err(|error| io_error(dest, error))?;
        for entry in fs::read_dir(source).map_err(|error| io_error(source, error))? {
            let entry = entry.map_err(|error| io_error(source, error))?;
            copy_tree(&entry.path(), &dest.join(entry.file_name()), owner)?;
        }
        fs::set_permissions(dest, metadata.permissions())
    } else if metadata.is_symlink() {
        let link = fs::read_link(source).map_err(|error| io_error(source, error))?;
        remove_existing(dest);
        symlink(link, dest)
    } else {
        remove_existing(dest);
        fs::copy(source, dest).map(drop)
    };
    result.map_err(|error| io_error(dest, error))?;
    lchown(dest, Some(owner.0), Some(owner.1)).map_err(|error| io_error(dest, error))
}

fn remove_existing(path: &Path) {
    if let Ok(metadata) = fs::symlink_metadata(path) {
        if metadata.is_dir() {
            fs::remove_dir_all(path).ok();
        } else {
            fs::remove_file(path).ok();
        }
    }
}

/// Creates `relative` and its parents under `out`, each with the owner and mode it has in
/// the image's layers, or root's 0755 when the image does not have it.
fn create_dirs(out: &Path, relative: &Path, layers: &[PathBuf]) -> Result<(), CopyError> {
    let mut current = PathBuf::new();
    for component in relative.components() {
        current.push(component);
        let path = out.join(&current);
        if path.is_dir() {
            continue;
        }
        fs::create_dir(&path).map_err(|error| io_error(&path, error))?;
        let (mode, uid, gid) = find_in_layers(layers, &current)
            .and_then(|found| fs::symlink_metadata(found).ok())
            .filter(|metadata| metadata.is_dir())
            .map(|metadata| (metadata.mode() & 0o7777, metadata.uid(), metadata.gid()))
            .unwrap_or((0o755, 0, 0));
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(|error| io_error(&path, error))?;
        lchown(&path, Some(uid), Some(gid)).map_err(|error| io_error(&path, error))?;
    }
    Ok(())
}

fn lower_is_dir(layers: &[PathBuf], relative: &Path) -> bool {
    find_in_layers(layers, relative)
        .is_some_and(|path| fs::symlink_metadata(path).is_ok_and(|metadata| metadata.is_dir()))
}

/// The topmost layer's copy of `relative`, if any layer has it. Whiteouts are not
/// interpreted: a path deleted by an upper layer may still be found in a lower one.
pub fn find_in_layers(layers: &[PathBuf], relative: &Path) -> Option<PathBuf> {
    layers
        .iter()
        .rev()
        .map(|layer| layer.join(relative))
        .find(|path| fs::symlink_metadata(path).is_ok())
}

/// Resolves `--chown=USER[:GROUP]` against the image's `/etc/passwd` and `/etc/group`.
pub fn resolve_owner(value: &str, layers: &[PathBuf]) -> Result<(u32, u32), CopyError> {
    let invalid = |reason: String| CopyError::Chown {
        value: value.to_owned(),
        reason,
    };
    let (user, group) = match value.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (value, None),
    };
    let passwd = read_in_layers(layers, "etc/passwd");
    let (uid, primary_gid) = match user.parse::<u32>() {
        Ok(uid) => (
            uid,
            lookup(&passwd, 2, user).and_then(|f| f[3].parse().ok()),
        ),
        Err(_) => {
            let fields = lookup(&passwd, 0, user).ok_or_else(|| {
                invalid(format!("user {user:?} is not in the image's /etc/passwd"))
            })?;
            let uid = fields[2]
                .parse()
                .map_err(|_| invalid("bad /etc/passwd entry".into()))?;
            (uid, fields[3].parse().ok())
        }
    };
    let gid = match group {
        None => primary_gid.unwrap_or(uid),
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let groups = read_in_layers(layers, "etc/group");
                lookup(&groups, 0, group)
                    .and_then(|fields| fields[2].parse().ok())
                    .ok_or_else(|| {
                        invalid(format!("group {group:?} is not in the image's /etc/group"))
                    })?
            }
        },
    };
    Ok((uid, gid))
}

fn read_in_layers(layers: &[PathBuf], relative: &str) -> String {
    find_in_layers(layers, Path::new(relative))
        .and_then(|path| fs::read_to_string(path).ok())
        .unwrap_or_default()
}

/// The fields of the first line of a passwd or group file whose field `index` is `key`.
fn lookup<'a>(file: &'a str, index: usize, key: &str) -> Option<Vec<&'a str>> {
    file.lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.len() >= 4 && fields[index] == key)
}

fn io_error(path: &Path, source: io::Error) -> CopyError {
    CopyError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn sources_stay_in_context() {
        let dir = tempfile::tempdir().unwrap();
        let context = dir.path().join("context");
        fs::create_dir_all(context.join("app")).unwrap();
        fs::write(context.join("app/a"), "a").unwrap();
        fs::write(dir.path().join("secret"), "s").unwrap();
        symlink("../../secret", context.join("app/out")).unwrap();
        symlink("a", context.join("app/in")).unwrap();

        assert!(resolve_sources(&context, &["app/a".into(), "/app/in".into()]).is_ok());
        for (source, outside) in [("../secret", true), ("app/out", true), ("app/none", false)] {
            let error = resolve_sources(&context, &[source.into()]).unwrap_err();
            match error {
                CopyError::SourceOutside { .. } => assert!(outside, "{source}"),
                CopyError::SourceMissing { .. } => assert!(!outside, "{source}"),
                other => panic!("{source}: {other}"),
            }
        }
    }

    #[test]
    fn destination_forms() {
        if !root() {
            eprintln!("SKIPPED: COPY sets file owners and needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let context = dir.path().join("context");
        fs::create_dir_all(context.join("tree/sub")).unwrap();
        fs::write(context.join("file"), "f").unwrap();
        fs::write(context.join("tree/sub/x"), "x").unwrap();
        let lower = dir.path().join("lower");
        fs::create_dir_all(lower.join("existing")).unwrap();
        let layers = vec![lower];

        let cases = [
            (vec!["file"], "/opt/renamed", "/", "opt/renamed"),
            (vec!["file"], "/opt/", "/", "opt/file"),
            (vec!["file"], "/existing", "/", "existing/file"),
            (vec!["file"], "rel", "/srv", "srv/rel"),
            (vec!["tree"], "/t", "/", "t/sub/x"),
        ];
        for (sources, destination, work_dir, expected) in cases {
            let out = tempfile::tempdir().unwrap();
            let sources: Vec<String> = sources.into_iter().map(String::from).collect();
            let resolved = resolve_sources(&context, &sources).unwrap();
            let plan = CopyPlan {
                sources: &resolved,
                destination,
                work_dir,
                owner: (1000, 1000),
                layers: &layers,
            };
            write_layer(&plan, out.path()).unwrap();
            let written = out.path().join(expected);
            assert!(written.is_file(), "{destination}: no {expected}");
            assert_eq!(fs::metadata(&written).unwrap().uid(), 1000, "{destination}");
        }

        let out = tempfile::tempdir().unwrap();
        let resolved = resolve_sources(&context, &["file".into()]).unwrap();
        let plan = CopyPlan {
            sources: &resolved,
            destination: "../../x",
            work_dir: "/",
            owner: (0, 0),
            layers: &layers,
        };
        assert!(matches!(
            write_layer(&plan, out.path()),
            Err(CopyError::Destination { .. })
        ));
    }

    #[test]
    fn owners_resolve_from_the_image() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("etc")).unwrap();
        fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\ndaytona:x:1000:1001::/home/daytona:/bin/bash\n",
        )
        .unwrap();
        fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let layers = vec![dir.path().to_owned()];
        assert_eq!(resolve_owner("daytona", &layers).unwrap(), (1000, 1001));
        assert_eq!(resolve_owner("daytona:staff", &layers).unwrap(), (1000, 50));
        assert_eq!(resolve_owner("5:6", &layers).unwrap(), (5, 6));
        assert_eq!(resolve_owner("7", &layers).unwrap(), (7, 7));
        assert!(resolve_owner("nobody", &layers).is_err());
        assert!(resolve_owner("daytona:nogroup", &layers).is_err());
    }
}
