//! Extended attributes: the few calls the packer and the unpacker need, and which names a layer
//! may carry.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Name of the overlayfs attribute that marks a directory as opaque (it hides lower layers).
pub(crate) const OVERLAY_OPAQUE: &CStr = c"trusted.overlay.opaque";

/// Returns whether an attribute found in a layer tar or a build tree is copied into the store.
///
/// Only file capabilities and `user.*` attributes pass. `trusted.*` attributes are dropped
/// because `trusted.overlay.*` steers overlayfs (opaque directories, redirects, metacopy): the
/// unpacker sets `trusted.overlay.opaque` itself from `.wh..wh..opq` entries and nothing else
/// from a tar may. `security.selinux` and other LSM labels belong to the host's policy.
pub(crate) fn is_kept(name: &[u8]) -> bool {
    name == b"security.capability" || name.starts_with(b"user.")
}

/// Sets attribute `name` on the open file `fd`.
pub(crate) fn set_fd(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: `fd` is a borrowed, open descriptor; `name` is NUL-terminated; `value` points to
    // `value.len()` readable bytes that the kernel only reads.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Returns the attributes of `path` (not following a final symbolic link) that [`is_kept`]
/// accepts, sorted by name so that a packed layer is deterministic.
pub(crate) fn read_kept(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c_path = path_to_cstring(path)?;
    let names = list(&c_path)?;
    let mut attributes = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if !is_kept(name) {
            continue;
        }
        let c_name = CString::new(name).map_err(|_| io::ErrorKind::InvalidInput)?;
        match get(&c_path, &c_name) {
            Ok(value) => attributes.push((name.to_vec(), value)),
            // Removed between the list and the read.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            Err(e) => return Err(e),
        }
    }
    attributes.sort();
    Ok(attributes)
}

/// Returns whether directory `path` carries `trusted.overlay.opaque=y`.
pub(crate) fn is_opaque_dir(path: &Path) -> io::Result<bool> {
    let c_path = path_to_cstring(path)?;
    match get(&c_path, OVERLAY_OPAQUE) {
        Ok(value) => Ok(value == b"y"),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENODATA | libc::ENOTSUP)) => Ok(false),
        Err(e) => Err(e),
    }
}

fn path_to_cstring(path: &Path) -> io::Result<CString> {
    CString::new(OsStr::as_bytes(path.as_os_str())).map_err(|_| io::ErrorKind::InvalidInput.into())
}

/// Returns the NUL-separated attribute names of `path`.
fn list(path: &CStr) -> io::Result<Vec<u8>> {
    loop {
        // SAFETY: `path` is NUL-terminated; a null buffer with size 0 requests only the size.
        let size = unsafe { libc::llistxattr(path.as_ptr(), std::ptr::null_mut(), 0) };
        if size < 0 {
            let error = io::Error::last_os_error();
            return match error.raw_os_error() {
                Some(libc::ENOTSUP) => Ok(Vec::new()),
                _ => Err(error),
            };
        }
        let mut buffer = vec![0u8; size as usize];
        // SAFETY: `buffer` has `buffer.len()` writable bytes and the kernel writes at most that.
        let written =
            unsafe { libc::llistxattr(path.as_ptr(), buffer.as_mut_ptr().cast(), buffer.len()) };
        if written >= 0 {
            buffer.truncate(written as usize);
            return Ok(buffer);
        }
        let error = io::Error::last_os_error();
        // ERANGE: the list grew between the two calls; ask again.
        if error.raw_os_error() != Some(libc::ERANGE) {
            return Err(error);
        }
    }
}

fn get(path: &CStr, name: &CStr) -> io::Result<Vec<u8>> {
    loop {
        // SAFETY: `path` and `name` are NUL-terminated; a null buffer with size 0 requests only
        // the size.
        let size =
            unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
        if size < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buffer = vec![0u8; size as usize];
        // SAFETY: `buffer` has `buffer.len()` writable bytes and the kernel writes at most that.
        let written = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                name.as_ptr(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
            )
        };
        if written >= 0 {
            buffer.truncate(written as usize);
            return Ok(buffer);
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::ERANGE) {
            return Err(error);
        }
    }
}
