//! Printing untrusted bytes (a rejected parameter, a task's comm) safely in a log line.

use core::fmt;

/// Displays bytes with printable ASCII as is and everything else as `\xNN`, cut after
/// [`Escaped::LIMIT`] bytes with a trailing `...`, so that a log line stays one short line.
#[derive(Clone, Copy, Debug)]
pub struct Escaped<'a>(pub &'a [u8]);

impl Escaped<'_> {
    /// Bytes shown at most.
    pub const LIMIT: usize = 32;
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &byte in self.0.iter().take(Self::LIMIT) {
            if byte == b'\\' {
                f.write_str("\\\\")?;
            } else if byte.is_ascii_graphic() || byte == b' ' {
                write!(f, "{}", char::from(byte))?;
            } else {
                write!(f, "\\x{byte:02x}")?;
            }
        }
        if self.0.len() > Self::LIMIT {
            f.write_str("...")?;
        }
        Ok(())
    }
}

/// The part of a NUL-padded C string buffer (such as `task_struct::comm`) before its first NUL.
pub fn until_nul(buffer: &[u8]) -> &[u8] {
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    &buffer[..end]
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;

    #[test]
    fn escapes_control_and_high_bytes_and_truncates() {
        assert_eq!(format!("{}", Escaped(b"warn\n")), "warn\\x0a");
        assert_eq!(format!("{}", Escaped(&[0xff, b'a', b'\\'])), "\\xffa\\\\");
        assert_eq!(
            format!("{}", Escaped(&[b'x'; 40])),
            format!("{}...", "x".repeat(32))
        );
    }

    #[test]
    fn comm_stops_at_nul() {
        assert_eq!(until_nul(b"python3\0\0\0"), b"python3");
        assert_eq!(until_nul(b"full"), b"full");
    }
}
