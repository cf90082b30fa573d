//! The gateway's host key: an Ed25519 key generated on first start and kept in the data
//! directory, so that clients see the same host key after a restart.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::RngCore;
use russh::keys::PrivateKey;
use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::Ed25519Keypair;

/// Errors of loading or creating the host key.
#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    #[error("failed to read the SSH host key {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the SSH host key {path} is not an OpenSSH private key; remove it to generate a new one"
    )]
    Parse {
        path: PathBuf,
        #[source]
        source: russh::keys::ssh_key::Error,
    },
    #[error("failed to write the SSH host key {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Loads the host key at `path`, or generates one there (mode 0600) when the file does not
/// exist.
pub fn load_or_generate_host_key(path: &Path) -> Result<PrivateKey, HostKeyError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            restrict(path)?;
            PrivateKey::from_openssh(text).map_err(|source| HostKeyError::Parse {
                path: path.to_owned(),
                source,
            })
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => generate(path),
        Err(source) => Err(HostKeyError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

fn generate(path: &Path) -> Result<PrivateKey, HostKeyError> {
    let write_error = |source| HostKeyError::Write {
        path: path.to_owned(),
        source,
    };
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    let text = key
        .to_openssh(LineEnding::LF)
        .map_err(|error| write_error(std::io::Error::other(error)))?;

    // Written to a temporary file first, so that a crash leaves no half-written key.
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(write_error)?;
    file.write_all(text.as_bytes()).map_err(write_error)?;
    file.sync_all().map_err(write_error)?;
    std::fs::rename(&temporary, path).map_err(write_error)?;
    tracing::info!(path = %path.display(), "generated the SSH gateway's host key");
    Ok(key)
}

/// Makes the key readable by its owner only, whatever an earlier version or a user left.
fn restrict(path: &Path) -> Result<(), HostKeyError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        HostKeyError::Write {
            path: path.to_owned(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn host_key_is_generated_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh_host_ed25519_key");
        let first = load_or_generate_host_key(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = load_or_generate_host_key(&path).unwrap();
        assert_eq!(first.public_key(), second.public_key());
    }

    #[test]
    fn host_key_that_is_not_a_key_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh_host_ed25519_key");
        std::fs::write(&path, "not a key").unwrap();
        assert!(matches!(
            load_or_generate_host_key(&path),
            Err(HostKeyError::Parse { .. })
        ));
    }
}
