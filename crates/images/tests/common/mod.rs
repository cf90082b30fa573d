//! Helpers shared by the integration tests: hand-made layer tars and the root check.

#![allow(dead_code)]

use std::io::Write;

/// Returns whether the test runs as root; prints `SKIPPED: <test>: <reason>` otherwise.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("SKIPPED: {test}: needs root (file owners, device nodes, trusted.* attributes)");
    false
}

/// Builds a layer tar entry by entry. Names and link targets are written to the header as raw
/// bytes, so that hostile paths (`../x`, `/etc/x`) can be expressed.
pub struct LayerTar {
    builder: tar::Builder<Vec<u8>>,
}

/// Owner, mode and mtime of an entry.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
}

impl Default for Meta {
    fn default() -> Self {
        Self {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
        }
    }
}

impl Meta {
    pub fn mode(mode: u32) -> Self {
        Self {
            mode,
            ..Self::default()
        }
    }
}

impl Default for LayerTar {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerTar {
    pub fn new() -> Self {
        Self {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    pub fn dir(mut self, name: &str, meta: Meta) -> Self {
        self.append(tar::EntryType::Directory, name.as_bytes(), None, meta, b"");
        self
    }

    pub fn file(mut self, name: &str, content: &[u8], meta: Meta) -> Self {
        self.append(
            tar::EntryType::Regular,
            name.as_bytes(),
            None,
            meta,
            content,
        );
        self
    }

    pub fn symlink(mut self, name: &str, target: &str) -> Self {
        let meta = Meta::mode(0o777);
        self.append(
            tar::EntryType::Symlink,
            name.as_bytes(),
            Some(target.as_bytes()),
            meta,
            b"",
        );
        self
    }

    pub fn hardlink(mut self, name: &str, target: &str) -> Self {
        self.append(
            tar::EntryType::Link,
            name.as_bytes(),
            Some(target.as_bytes()),
            Meta::default(),
            b"",
        );
        self
    }

    pub fn char_device(mut self, name: &str, major: u32, minor: u32) -> Self {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Char);
        header.set_device_major(major).unwrap();
        header.set_device_minor(minor).unwrap();
        self.finish_header(header, name.as_bytes(), None, Meta::mode(0o666), b"");
        self
    }

    /// Adds a PAX header with `SCHILY.xattr.<name>` records for the next entry.
    pub fn xattrs(mut self, attributes: &[(&str, &[u8])]) -> Self {
        let records: Vec<(String, &[u8])> = attributes
            .iter()
            .map(|(name, value)| (format!("SCHILY.xattr.{name}"), *value))
            .collect();
        self.builder
            .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))
            .unwrap();
        self
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }

    fn append(
        &mut self,
        entry_type: tar::EntryType,
        name: &[u8],
        link: Option<&[u8]>,
        meta: Meta,
        content: &[u8],
    ) {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(entry_type);
        self.finish_header(header, name, link, meta, content);
    }

    fn finish_header(
        &mut self,
        mut header: tar::Header,
        name: &[u8],
        link: Option<&[u8]>,
        meta: Meta,
        content: &[u8],
    ) {
        assert!(name.len() < 100, "test names must fit the header");
        header.set_mode(meta.mode);
        header.set_uid(meta.uid);
        header.set_gid(meta.gid);
        header.set_mtime(meta.mtime);
        header.set_size(content.len() as u64);
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        if let Some(link) = link {
            header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        }
        header.set_cksum();
        self.builder.append(&header, content).unwrap();
    }
}

/// Compresses `data` with gzip.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// Returns `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}
