//! Bounded capture of a command's output.

/// Bytes of one output stream, kept up to a limit. Bytes past the limit are counted and
/// dropped, so memory stays bounded however much a command writes.
#[derive(Debug)]
pub struct CappedBuffer {
    data: Vec<u8>,
    limit: usize,
    omitted: u64,
}

impl CappedBuffer {
    pub fn new(limit: usize) -> Self {
        Self {
            data: Vec::new(),
            limit,
            omitted: 0,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        let room = self.limit - self.data.len();
        let kept = bytes.len().min(room);
        self.data.extend_from_slice(&bytes[..kept]);
        self.omitted += (bytes.len() - kept) as u64;
    }

    /// Converts the bytes to text (invalid UTF-8 becomes U+FFFD) and, when bytes were dropped,
    /// appends a line with their count.
    pub fn into_text(self) -> String {
        let mut text = String::from_utf8_lossy(&self.data).into_owned();
        if self.omitted > 0 {
            text.push_str(&format!(
                "\n[output truncated: {} bytes omitted]\n",
                self.omitted
            ));
        }
        text
    }
}

/// Output of one command: both streams in the order they were read, and each stream alone.
#[derive(Debug)]
pub struct CapturedOutput {
    pub combined: CappedBuffer,
    pub stdout: CappedBuffer,
    pub stderr: CappedBuffer,
}

/// Output of a finished command, as text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputText {
    pub combined: String,
    pub stdout: String,
    pub stderr: String,
}

impl CapturedOutput {
    pub fn new(limit: usize) -> Self {
        Self {
            combined: CappedBuffer::new(limit),
            stdout: CappedBuffer::new(limit),
            stderr: CappedBuffer::new(limit),
        }
    }

    pub fn push_stdout(&mut self, bytes: &[u8]) {
        self.combined.push(bytes);
        self.stdout.push(bytes);
    }

    pub fn push_stderr(&mut self, bytes: &[u8]) {
        self.combined.push(bytes);
        self.stderr.push(bytes);
    }

    pub fn into_text(self) -> OutputText {
        OutputText {
            combined: self.combined.into_text(),
            stdout: self.stdout.into_text(),
            stderr: self.stderr.into_text(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_under_limit_is_unchanged() {
        let mut buffer = CappedBuffer::new(10);
        buffer.push(b"hello");
        assert_eq!(buffer.into_text(), "hello");
    }

    #[test]
    fn buffer_over_limit_ends_with_marker() {
        let mut buffer = CappedBuffer::new(4);
        buffer.push(b"abc");
        buffer.push(b"defg");
        buffer.push(b"hi");
        assert_eq!(
            buffer.into_text(),
            "abcd\n[output truncated: 5 bytes omitted]\n"
        );
    }

    #[test]
    fn buffer_replaces_invalid_utf8() {
        let mut buffer = CappedBuffer::new(10);
        buffer.push(b"a\xffb");
        assert_eq!(buffer.into_text(), "a\u{fffd}b");
    }

    #[test]
    fn captured_output_keeps_streams_apart() {
        let mut output = CapturedOutput::new(100);
        output.push_stdout(b"out1 ");
        output.push_stderr(b"err ");
        output.push_stdout(b"out2");
        let text = output.into_text();
        assert_eq!(text.combined, "out1 err out2");
        assert_eq!(text.stdout, "out1 out2");
        assert_eq!(text.stderr, "err ");
    }
}
