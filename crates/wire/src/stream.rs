//! The toolbox's internal process stream: one command with its standard streams carried over
//! an upgraded HTTP connection on the toolbox socket. Only the runner side (the SSH gateway)
//! uses it; the official SDKs never see it.
//!
//! The client sends `POST /process/stream` with `Connection: upgrade`, `Upgrade:`
//! [`UPGRADE_PROTOCOL`] and the [`StreamRequest`] as base64 (standard, padded) of its JSON in
//! the [`REQUEST_HEADER`] header. The toolbox starts the command before it responds: 101 means
//! it runs, any other status carries Daytona's error body. After 101 both sides exchange
//! frames: a tag byte, the payload length as a big-endian `u32`, then the payload.

use serde::{Deserialize, Serialize};

/// Path of the stream endpoint.
pub const PATH: &str = "/process/stream";

/// Value of the `Upgrade` header.
pub const UPGRADE_PROTOCOL: &str = "daytona-process-stream";

/// Header that carries the request.
pub const REQUEST_HEADER: &str = "x-daytona-stream-request";

/// Largest payload of one frame, in bytes.
pub const MAX_FRAME: usize = 1024 * 1024;

/// The command of a stream and its standard streams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StreamRequest {
    /// Command line run by the sandbox user's shell with `-c`; `None` starts a login shell.
    pub command: Option<String>,
    /// A pseudo-terminal for the command; `None` connects pipes, so standard output and
    /// standard error stay apart.
    pub terminal: Option<TerminalRequest>,
    /// Variables set on top of the sandbox's environment.
    #[serde(default)]
    pub env: Vec<(String, String)>,
}

/// The pseudo-terminal of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TerminalRequest {
    /// Value of `TERM`.
    pub term: String,
    pub cols: u16,
    pub rows: u16,
}

/// Frame tags. Client to toolbox: [`tag::STDIN`], [`tag::STDIN_EOF`], [`tag::RESIZE`].
/// Toolbox to client: [`tag::STDOUT`], [`tag::STDERR`], [`tag::EXIT`], [`tag::ERROR`].
pub mod tag {
    /// Bytes for the command's standard input.
    pub const STDIN: u8 = 0;
    /// The client's input ended: standard input is closed (on a terminal, nothing happens).
    pub const STDIN_EOF: u8 = 1;
    /// New terminal size: columns then rows, each a big-endian `u16`.
    pub const RESIZE: u8 = 2;
    /// Bytes the command wrote to standard output, or to the terminal.
    pub const STDOUT: u8 = 3;
    /// Bytes the command wrote to standard error.
    pub const STDERR: u8 = 4;
    /// The command's exit code as a big-endian `i32` (128 + the signal number after a
    /// signal); the last frame.
    pub const EXIT: u8 = 5;
    /// A failure of the toolbox while streaming, as UTF-8 text; the last frame.
    pub const ERROR: u8 = 6;
}

/// Encodes one frame's header.
pub fn frame_header(tag: u8, length: usize) -> [u8; 5] {
    let length = u32::try_from(length).expect("frames are at most MAX_FRAME bytes");
    let [a, b, c, d] = length.to_be_bytes();
    [tag, a, b, c, d]
}

/// Decodes one frame's header into its tag and payload length.
pub fn parse_frame_header(header: [u8; 5]) -> (u8, usize) {
    let [tag, a, b, c, d] = header;
    (tag, u32::from_be_bytes([a, b, c, d]) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_header_round_trip() {
        let header = frame_header(tag::STDERR, 70_000);
        assert_eq!(parse_frame_header(header), (tag::STDERR, 70_000));
    }

    #[test]
    fn request_rejects_unknown_fields() {
        let parsed: Result<StreamRequest, _> =
            serde_json::from_str(r#"{"command":null,"terminal":null,"shell":"x"}"#);
        assert!(parsed.is_err());
    }
}
