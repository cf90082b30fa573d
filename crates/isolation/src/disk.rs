//! Disk images: the ext4 filesystem in a sparse file that bounds a sandbox's disk.
//!
//! The setup stage attaches the image to a loop device with `LO_FLAGS_AUTOCLEAR` and mounts
//! it only in the sandbox's private mount namespace. The host's mount table never lists it:
//! when the sandbox's last process exits, its mount namespaces go away, the filesystem is
//! unmounted and the kernel detaches the loop device, even if the runner is gone by then.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};

/// `LOOP_CTL_GET_FREE` of `linux/loop.h`.
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
/// `LOOP_CONFIGURE` of `linux/loop.h` (Linux 5.8 and later).
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
/// `LO_FLAGS_AUTOCLEAR`: the device detaches itself when its last user closes it.
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// How often an attach retries when another process takes the free device first.
const ATTACH_ATTEMPTS: usize = 32;

/// `struct loop_info64` of `linux/loop.h`.
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    size_limit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

/// `struct loop_config` of `linux/loop.h`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Attaches `image` to a free loop device that detaches itself once nothing uses it, and
/// returns the device's path and an open descriptor of it; closing the descriptor before
/// anything else opens the device detaches it.
pub fn attach_loop(image: &Path) -> io::Result<(PathBuf, OwnedFd)> {
    let backing = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(image)?;
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/loop-control")?;
    let mut last_error = io::Error::from_raw_os_error(libc::EBUSY);
    for attempt in 0..ATTACH_ATTEMPTS {
        if attempt > 0 {
            backoff(attempt);
        }
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let number = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if number < 0 {
            return Err(io::Error::last_os_error());
        }
        let path = PathBuf::from(format!("/dev/loop{number}"));
        let device = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)?;
        match configure(&device, &backing) {
            Ok(()) => return Ok((path, device.into())),
            // Another process configured the device between the two calls.
            Err(error) if error.raw_os_error() == Some(libc::EBUSY) => last_error = error,
            Err(error) => return Err(error),
        }
    }
    Err(last_error)
}

/// Waits a little before the next attempt at a device that other sandboxes starting at the
/// same moment compete for; the wait grows with the attempt and varies by process, so the
/// competitors spread out.
fn backoff(attempt: usize) {
    let spread = u64::from(std::process::id() % 7);
    let millis = (attempt as u64).min(10) * (1 + spread);
    std::thread::sleep(std::time::Duration::from_millis(millis));
}

fn configure(device: &File, backing: &File) -> io::Result<()> {
    // SAFETY: all-zero is a valid value of these plain C structs.
    let mut config: LoopConfig = unsafe { std::mem::zeroed() };
    config.fd = backing.as_raw_fd() as u32;
    config.info.flags = LO_FLAGS_AUTOCLEAR;
    // SAFETY: LOOP_CONFIGURE reads a `struct loop_config`, which `config` is, and which
    // outlives the call; the kernel takes its own reference to the backing file.
    let ret = unsafe {
        libc::ioctl(
            device.as_raw_fd(),
            LOOP_CONFIGURE,
            &config as *const LoopConfig,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Mounts the ext4 filesystem of `image` at `target` without devices and setuid programs.
/// `discard` gives the space of deleted files back to the host (the loop device punches holes
/// in the image); `noinit_itable` keeps the kernel from zeroing the inode tables in the
/// background, which would allocate their space in the sparse image.
pub fn mount_image(image: &Path, target: &Path) -> io::Result<()> {
    let mut attempt = 0;
    loop {
        let (device, device_fd) = attach_loop(image)?;
        let mounted = mount(
            Some(&device),
            target,
            Some("ext4"),
            MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_NOATIME,
            Some("discard,noinit_itable"),
        );
        // The descriptor closes here: the mount keeps the device now, or, after a failed
        // mount, nothing does and the device detaches.
        drop(device_fd);
        match mounted {
            Ok(()) => return Ok(()),
            // The device was claimed by another start between the attach and the mount.
            Err(nix::errno::Errno::EBUSY) if attempt + 1 < ATTACH_ATTEMPTS => {
                attempt += 1;
                backoff(attempt);
            }
            Err(errno) => return Err(errno.into()),
        }
    }
}

/// The loop devices, such as `loop3`, whose backing file is `image`. A stopped sandbox's
/// device detaches once its filesystem is unmounted; until then the image must not be
/// attached again or resized.
pub fn loop_devices_of(image: &Path) -> Vec<String> {
    let Ok(image) = fs::canonicalize(image) else {
        return Vec::new();
    };
    let Ok(entries) = fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            if !name.starts_with("loop") {
                return None;
            }
            let backing = fs::read_to_string(entry.path().join("loop/backing_file")).ok()?;
            (Path::new(backing.trim_end()) == image).then_some(name)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_structs_have_kernel_sizes() {
        assert_eq!(size_of::<LoopInfo64>(), 232);
        assert_eq!(size_of::<LoopConfig>(), 304);
    }
}
