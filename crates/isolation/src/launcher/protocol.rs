//! Messages between the launcher client and the launcher, one `SOCK_SEQPACKET` message each.
//!
//! A request is one message: a flags byte, then the request as JSON. The standard streams
//! that the request carries travel with it as `SCM_RIGHTS` descriptors, in stream order. A
//! request larger than [`MAX_INLINE`] goes into a memory file that is sent as the last
//! descriptor instead, because a datagram must fit into the socket's send buffer.
//!
//! The launcher sends [`Reply::Ready`] once after its start, and one reply per request.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut, Read, Seek, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::{Deserialize, Serialize};

use super::{Identity, InvalidRequest, SessionMode, SpawnRequest, StartStep};

/// Largest request body sent inside the message; the default socket send buffer of Linux
/// (`net.core.wmem_default`, 208 KiB) takes it with room to spare.
pub(super) const MAX_INLINE: usize = 60 * 1024;

/// Largest request body at all. Linux limits argv and environment together to a quarter of
/// the stack limit (2 MiB with the usual 8 MiB), so anything larger fails at execve anyway.
pub(super) const MAX_BODY: usize = 16 << 20;

/// Size of the receive buffer: a flags byte and an inline body, with room to see truncation.
pub(super) const RECEIVE_BUFFER: usize = MAX_INLINE + 1024;

/// Maximum number of descriptors in one request: three standard streams and the memory file.
const MAX_FDS: usize = 4;

/// Flag bit of the memory file; bits 0 to 2 tell which standard streams are present.
const BODY_IN_MEMFD: u8 = 1 << 3;

/// The request as it travels. Byte strings are JSON strings when they are UTF-8 and arrays
/// of numbers otherwise.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WireRequest {
    argv: Vec<Bytes>,
    env: Vec<(Bytes, Bytes)>,
    cwd: Bytes,
    user: Option<Identity>,
    confine: bool,
    session: SessionMode,
    controlling_terminal: Option<u8>,
    umask: u32,
}

/// A byte string in JSON: a string if it is UTF-8, otherwise an array of bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bytes(Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => serializer.serialize_str(text),
            Err(_) => serializer.collect_seq(&self.0),
        }
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Bytes;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of bytes")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Bytes, E> {
                Ok(Bytes(text.as_bytes().to_vec()))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Bytes, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(byte) = seq.next_element::<u8>()? {
                    bytes.push(byte);
                }
                Ok(Bytes(bytes))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

fn bytes(value: &OsStr) -> Bytes {
    Bytes(value.as_bytes().to_vec())
}

/// The replies of the launcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "reply", deny_unknown_fields)]
pub(super) enum Reply {
    /// Sent once after the start: the launcher serves requests. `landlock` is true when it is
    /// in a Landlock domain (confined, on a kernel with Landlock scopes).
    Ready { confined: bool, landlock: bool },
    /// The request was not carried out.
    Rejected { reason: String },
    /// No process was created.
    CloneFailed { errno: i32 },
    /// The process executed the program. It is a child of the launcher's parent; the pid is
    /// in the launcher's PID namespace.
    Started { pid: i32 },
    /// The process failed before or at exec and exited with status 127; its parent still
    /// has to reap it.
    StartFailed {
        pid: i32,
        step: StartStep,
        errno: i32,
    },
}

/// Checks what the launcher would reject, so that the client reports it as a typed error.
pub(super) fn validate(
    request: &SpawnRequest,
    present: [bool; 3],
    confined: bool,
) -> Result<(), InvalidRequest> {
    match request.argv.first() {
        Some(program) if !program.is_empty() => {}
        _ => return Err(InvalidRequest::EmptyProgram),
    }
    let has_nul = |value: &OsStr| value.as_bytes().contains(&0);
    if request.argv.iter().any(|arg| has_nul(arg)) {
        return Err(InvalidRequest::NulByte { field: "argv" });
    }
    for (name, value) in &request.env {
        if name.is_empty() || name.as_bytes().contains(&b'=') || has_nul(name) {
            return Err(InvalidRequest::EnvName {
                name: name.to_string_lossy().into_owned(),
            });
        }
        if has_nul(value) {
            return Err(InvalidRequest::NulByte { field: "env" });
        }
    }
    if has_nul(request.cwd.as_os_str()) {
        return Err(InvalidRequest::NulByte { field: "cwd" });
    }
    if let Some(index) = request.controlling_terminal {
        if index > 2 {
            return Err(InvalidRequest::TerminalIndex { index });
        }
        if request.session != SessionMode::NewSession {
            return Err(InvalidRequest::TerminalWithoutSession);
        }
        if !present[usize::from(index)] {
            return Err(InvalidRequest::TerminalMissing { index });
        }
    }
    match (request.confine, confined) {
        (true, false) => return Err(InvalidRequest::ConfineUnavailable),
        (false, true) => return Err(InvalidRequest::ConfineRequired),
        _ => {}
    }
    Ok(())
}

/// An encoded request: the message bytes and, for a large request, the memory file.
pub(super) struct EncodedRequest {
    pub message: Vec<u8>,
    pub memfd: Option<OwnedFd>,
}

pub(super) fn encode_request(
    request: &SpawnRequest,
    present: [bool; 3],
) -> Result<EncodedRequest, InvalidRequest> {
    let wire = WireRequest {
        argv: request.argv.iter().map(|arg| bytes(arg)).collect(),
        env: request
            .env
            .iter()
            .map(|(name, value)| (bytes(name), bytes(value)))
            .collect(),
        cwd: bytes(request.cwd.as_os_str()),
        user: request.user.clone(),
        confine: request.confine,
        session: request.session,
        controlling_terminal: request.controlling_terminal,
        umask: request.umask,
    };
    let body = serde_json::to_vec(&wire).expect("a request serializes to JSON");
    if body.len() > MAX_BODY {
        return Err(InvalidRequest::TooLarge {
            size: body.len(),
            limit: MAX_BODY,
        });
    }

    let mut flags = present
        .iter()
        .enumerate()
        .fold(0u8, |flags, (index, &present)| {
            flags | (u8::from(present) << index)
        });
    if body.len() <= MAX_INLINE {
        let mut message = Vec::with_capacity(1 + body.len());
        message.push(flags);
        message.extend_from_slice(&body);
        return Ok(EncodedRequest {
            message,
            memfd: None,
        });
    }
    flags |= BODY_IN_MEMFD;
    // A memory file cannot fail to take the bytes but for lack of memory.
    let memfd = body_memfd(&body).map_err(|_| InvalidRequest::TooLarge {
        size: body.len(),
        limit: MAX_INLINE,
    })?;
    Ok(EncodedRequest {
        message: vec![flags],
        memfd: Some(memfd),
    })
}

fn body_memfd(body: &[u8]) -> io::Result<OwnedFd> {
    let memfd = nix::sys::memfd::memfd_create(
        c"daytona-spawn-request",
        nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
    )?;
    let mut file = File::from(memfd);
    file.write_all(body)?;
    Ok(file.into())
}

/// A request as the launcher decoded it, with byte strings ready for execve.
#[derive(Debug)]
pub(super) struct DecodedRequest {
    pub argv: Vec<CString>,
    /// `NAME=value` entries.
    pub env: Vec<CString>,
    /// The value of `PATH` in `env`, if any.
    pub path: Option<Vec<u8>>,
    pub cwd: CString,
    pub user: Option<Identity>,
    pub session: SessionMode,
    pub controlling_terminal: Option<u8>,
    pub umask: u32,
    /// Descriptors of the standard streams; `None` means `/dev/null`.
    pub stdio: [Option<OwnedFd>; 3],
}

/// Decodes a received request. Returns the reason to reject it on failure.
pub(super) fn decode_request(
    message: &[u8],
    fds: Vec<OwnedFd>,
    confined: bool,
) -> Result<DecodedRequest, String> {
    let (&flags, inline) = message
        .split_first()
        .ok_or_else(|| "empty message".to_string())?;
    let present = [0, 1, 2].map(|index| flags & (1 << index) != 0);
    let expected = present.iter().filter(|&&p| p).count() + usize::from(flags & BODY_IN_MEMFD != 0);
    if fds.len() != expected {
        return Err(format!(
            "{} descriptors arrived where the flags announce {expected}",
            fds.len()
        ));
    }

    let mut fds = fds.into_iter();
    let stdio = present.map(|present| if present { fds.next() } else { None });
    let memfd_body;
    let body = match fds.next() {
        Some(memfd) => {
            memfd_body = read_memfd(memfd).map_err(|err| format!("unreadable body: {err}"))?;
            &memfd_body[..]
        }
        None => inline,
    };
    let wire: WireRequest =
        serde_json::from_slice(body).map_err(|err| format!("invalid request: {err}"))?;

    let request = SpawnRequest {
        argv: wire
            .argv
            .into_iter()
            .map(|arg| OsString::from_vec(arg.0))
            .collect(),
        env: wire
            .env
            .into_iter()
            .map(|(name, value)| (OsString::from_vec(name.0), OsString::from_vec(value.0)))
            .collect(),
        cwd: PathBuf::from(OsString::from_vec(wire.cwd.0)),
        user: wire.user,
        confine: wire.confine,
        session: wire.session,
        controlling_terminal: wire.controlling_terminal,
        umask: wire.umask,
    };
    validate(&request, present, confined).map_err(|err| err.to_string())?;
    Ok(into_decoded(request, stdio))
}

/// Converts a validated request: nothing in it contains a NUL byte any more.
fn into_decoded(request: SpawnRequest, stdio: [Option<OwnedFd>; 3]) -> DecodedRequest {
    let c_string = |bytes: Vec<u8>| CString::new(bytes).expect("validated: no NUL byte");
    let path = request
        .env
        .iter()
        .rev()
        .find(|(name, _)| name == "PATH")
        .map(|(_, value)| value.as_bytes().to_vec());
    let env = request
        .env
        .into_iter()
        .map(|(name, value)| {
            let mut entry = name.into_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            c_string(entry)
        })
        .collect();
    DecodedRequest {
        argv: request
            .argv
            .into_iter()
            .map(|arg| c_string(arg.into_vec()))
            .collect(),
        env,
        path,
        cwd: c_string(request.cwd.into_os_string().into_vec()),
        user: request.user,
        session: request.session,
        controlling_terminal: request.controlling_terminal,
        umask: request.umask,
        stdio,
    }
}

fn read_memfd(memfd: OwnedFd) -> io::Result<Vec<u8>> {
    let mut file = File::from(memfd);
    // The sender's writes moved the shared file offset to the end.
    file.rewind()?;
    let mut body = Vec::new();
    file.take(MAX_BODY as u64 + 1).read_to_end(&mut body)?;
    if body.len() > MAX_BODY {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "body too large"));
    }
    Ok(body)
}

pub(super) fn encode_reply(reply: &Reply) -> Vec<u8> {
    serde_json::to_vec(reply).expect("a reply serializes to JSON")
}

pub(super) fn decode_reply(message: &[u8]) -> Result<Reply, serde_json::Error> {
    serde_json::from_slice(message)
}

/// Sends one message with descriptors. A `SOCK_SEQPACKET` socket sends all of it or nothing.
pub(super) fn send(socket: BorrowedFd<'_>, message: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let iov = [IoSlice::new(message)];
    let rights = [ControlMessage::ScmRights(fds)];
    let control: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        control,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(())
}

/// One received message: its length in the buffer and its descriptors, close-on-exec.
pub(super) struct Received {
    pub len: usize,
    pub fds: Vec<OwnedFd>,
}

/// Receives one message. Zero bytes without descriptors means that the peer closed its end:
/// every message of the protocol has at least one byte.
pub(super) fn receive(socket: BorrowedFd<'_>, buffer: &mut [u8]) -> io::Result<Received> {
    let mut control = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buffer)];
    let message = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut control),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;

    // Own the descriptors first, so that they are closed on every path below.
    let mut fds = Vec::new();
    for control in message.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = control {
            for fd in received {
                // SAFETY: the kernel just installed `fd` in this process for this message,
                // and nothing else owns it.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    if message
        .flags
        .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC)
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "message or its descriptors truncated",
        ));
    }
    Ok(Received {
        len: message.bytes,
        fds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> SpawnRequest {
        let mut request = SpawnRequest::new(["/bin/echo", "hi"]);
        request.env = vec![
            ("PATH".into(), "/bin".into()),
            ("RAW".into(), OsString::from_vec(vec![0xff, b'x'])),
        ];
        request.user = Some(Identity {
            uid: 1000,
            gid: 1000,
            groups: vec![27],
        });
        request
    }

    #[test]
    fn request_round_trips() {
        let encoded = encode_request(&request(), [false; 3]).unwrap();
        assert!(encoded.memfd.is_none());
        assert_eq!(encoded.message[0], 0);
        let decoded = decode_request(&encoded.message, Vec::new(), true).unwrap();
        assert_eq!(decoded.argv, [c"/bin/echo".to_owned(), c"hi".to_owned()]);
        assert_eq!(decoded.env[0].as_bytes(), b"PATH=/bin");
        assert_eq!(decoded.env[1].as_bytes(), b"RAW=\xffx");
        assert_eq!(decoded.path.as_deref(), Some(&b"/bin"[..]));
        assert_eq!(decoded.user.unwrap().groups, [27]);
    }

    #[test]
    fn large_request_travels_in_memfd() {
        let mut large = request();
        large.argv.push("x".repeat(MAX_INLINE).into());
        let encoded = encode_request(&large, [false; 3]).unwrap();
        assert_eq!(encoded.message, [BODY_IN_MEMFD]);
        let memfd = encoded.memfd.unwrap();
        let decoded = decode_request(&encoded.message, vec![memfd], true).unwrap();
        assert_eq!(decoded.argv[2].as_bytes().len(), MAX_INLINE);
    }

    #[test]
    fn descriptor_count_checked() {
        let encoded = encode_request(&request(), [true, false, true]).unwrap();
        assert_eq!(encoded.message[0], 0b101);
        let err = decode_request(&encoded.message, Vec::new(), true).unwrap_err();
        assert!(err.contains("flags announce 2"), "{err}");
    }

    #[test]
    fn invalid_requests_rejected() {
        type Change = fn(&mut SpawnRequest);
        let cases: [(Change, InvalidRequest); 6] = [
            (|r| r.argv.clear(), InvalidRequest::EmptyProgram),
            (
                |r| r.argv.push("a\0b".into()),
                InvalidRequest::NulByte { field: "argv" },
            ),
            (
                |r| r.env.push(("A=B".into(), "c".into())),
                InvalidRequest::EnvName { name: "A=B".into() },
            ),
            (
                |r| r.controlling_terminal = Some(3),
                InvalidRequest::TerminalIndex { index: 3 },
            ),
            (
                |r| {
                    r.controlling_terminal = Some(0);
                    r.session = SessionMode::NewProcessGroup;
                },
                InvalidRequest::TerminalWithoutSession,
            ),
            (
                |r| r.controlling_terminal = Some(1),
                InvalidRequest::TerminalMissing { index: 1 },
            ),
        ];
        for (change, expected) in cases {
            let mut invalid = request();
            change(&mut invalid);
            assert_eq!(
                validate(&invalid, [true, false, false], true),
                Err(expected)
            );
        }
        assert_eq!(
            validate(&request(), [false; 3], false),
            Err(InvalidRequest::ConfineUnavailable)
        );
        let mut unconfined = request();
        unconfined.confine = false;
        assert_eq!(
            validate(&unconfined, [false; 3], true),
            Err(InvalidRequest::ConfineRequired)
        );
    }

    #[test]
    fn replies_round_trip() {
        for reply in [
            Reply::Ready {
                confined: true,
                landlock: true,
            },
            Reply::Started { pid: 42 },
            Reply::StartFailed {
                pid: 43,
                step: StartStep::Execve,
                errno: libc::ENOENT,
            },
        ] {
            assert_eq!(decode_reply(&encode_reply(&reply)).unwrap(), reply);
        }
    }
}
