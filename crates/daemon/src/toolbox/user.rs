//! The sandbox user, read from the image's `/etc/passwd` and `/etc/group`.
//!
//! The daemon is a static glibc binary, so NSS (`getpwnam`, `getgrnam`, `initgroups`) does not
//! work; the two files are parsed here instead.

use std::fs;
use std::path::{Path, PathBuf};

/// Path of the user database inside the sandbox.
pub const PASSWD_PATH: &str = "/etc/passwd";
/// Path of the group database inside the sandbox.
pub const GROUP_PATH: &str = "/etc/group";

/// Failure to look up the sandbox user.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("failed to read {}", path.display())]
    ReadDatabase {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("user {name:?} not found in {}", path.display())]
    NameNotFound { name: String, path: PathBuf },
    #[error("uid {uid} not found in {}", path.display())]
    UidNotFound { uid: u32, path: PathBuf },
}

/// One account from `/etc/passwd`, with its supplementary groups from `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    /// Login shell as `/etc/passwd` names it; it may not exist in the image.
    pub shell: PathBuf,
    /// The primary group followed by every group that lists the user as a member, without
    /// duplicates.
    pub groups: Vec<u32>,
}

impl SandboxUser {
    /// Looks up the user named `name` in the sandbox's databases.
    pub fn by_name(name: &str) -> Result<Self, UserError> {
        let passwd = read_database(Path::new(PASSWD_PATH))?;
        let entry = parse_passwd(&passwd)
            .find(|entry| entry.name == name)
            .ok_or_else(|| UserError::NameNotFound {
                name: name.to_owned(),
                path: PASSWD_PATH.into(),
            })?;
        Self::with_groups(entry)
    }

    /// Looks up the user whose uid is `uid` in the sandbox's databases.
    pub fn by_uid(uid: u32) -> Result<Self, UserError> {
        let passwd = read_database(Path::new(PASSWD_PATH))?;
        let entry = parse_passwd(&passwd)
            .find(|entry| entry.uid == uid)
            .ok_or_else(|| UserError::UidNotFound {
                uid,
                path: PASSWD_PATH.into(),
            })?;
        Self::with_groups(entry)
    }

    fn with_groups(entry: PasswdEntry<'_>) -> Result<Self, UserError> {
        // A missing /etc/group only loses the supplementary groups; the primary group comes
        // from /etc/passwd.
        let group = match fs::read_to_string(GROUP_PATH) {
            Ok(text) => text,
            Err(source) if source.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(UserError::ReadDatabase {
                    path: GROUP_PATH.into(),
                    source,
                });
            }
        };
        Ok(Self {
            name: entry.name.to_owned(),
            uid: entry.uid,
            gid: entry.gid,
            home: PathBuf::from(entry.home),
            shell: PathBuf::from(entry.shell),
            groups: supplementary_groups(&group, entry.name, entry.gid),
        })
    }
}

fn read_database(path: &Path) -> Result<String, UserError> {
    fs::read_to_string(path).map_err(|source| UserError::ReadDatabase {
        path: path.to_owned(),
        source,
    })
}

/// One parsed line of `/etc/passwd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
    shell: &'a str,
}

/// Parses `/etc/passwd` text, skipping comments and malformed lines.
fn parse_passwd(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        if line.starts_with('#') {
            return None;
        }
        let fields: Vec<&str> = line.split(':').collect();
        let [name, _password, uid, gid, _gecos, home, shell] = fields[..] else {
            return None;
        };
        Some(PasswdEntry {
            name,
            uid: uid.parse().ok()?,
            gid: gid.parse().ok()?,
            home,
            shell,
        })
    })
}

/// Lists `primary_gid` and the gids of every `/etc/group` entry whose member list names
/// `user`, in file order and without duplicates.
fn supplementary_groups(group_text: &str, user: &str, primary_gid: u32) -> Vec<u32> {
    let mut groups = vec![primary_gid];
    for line in group_text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(':').collect();
        let [_name, _password, gid, members] = fields[..] else {
            continue;
        };
        let Ok(gid) = gid.parse::<u32>() else {
            continue;
        };
        let is_member = members.split(',').any(|member| member.trim() == user);
        if is_member && !groups.contains(&gid) {
            groups.push(gid);
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/bash
# a comment
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
broken line
daytona:x:1000:1000:Daytona,,,:/home/daytona:/bin/bash
";

    const GROUP: &str = "\
root:x:0:
sudo:x:27:daytona,other
daytona:x:1000:
docker:x:999:other, daytona
broken
users:x:100:
";

    #[test]
    fn passwd_finds_user_fields() {
        let entry = parse_passwd(PASSWD)
            .find(|entry| entry.name == "daytona")
            .unwrap();
        assert_eq!(entry.uid, 1000);
        assert_eq!(entry.gid, 1000);
        assert_eq!(entry.home, "/home/daytona");
        assert_eq!(entry.shell, "/bin/bash");
    }

    #[test]
    fn passwd_skips_comments_and_malformed_lines() {
        let names: Vec<&str> = parse_passwd(PASSWD).map(|entry| entry.name).collect();
        assert_eq!(names, ["root", "daemon", "daytona"]);
    }

    #[test]
    fn groups_start_with_primary_and_list_memberships() {
        assert_eq!(
            supplementary_groups(GROUP, "daytona", 1000),
            [1000, 27, 999]
        );
    }

    #[test]
    fn groups_do_not_repeat_primary() {
        assert_eq!(supplementary_groups("wheel:x:10:me\n", "me", 10), [10]);
    }

    #[test]
    fn groups_of_user_without_memberships() {
        assert_eq!(supplementary_groups(GROUP, "nobody", 65534), [65534]);
    }
}
