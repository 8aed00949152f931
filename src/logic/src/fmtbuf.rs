//! Formatting into a caller's fixed buffer, as sysfs `show()` and parameter `get()` need.

use core::fmt;

/// A [`fmt::Write`] over a byte slice that fails, rather than truncating silently, when full.
#[derive(Debug)]
pub struct SliceWriter<'a> {
    buffer: &'a mut [u8],
    len: usize,
}

impl<'a> SliceWriter<'a> {
    /// A writer that fills `buffer` from its start.
    pub fn new(buffer: &'a mut [u8]) -> Self {
        SliceWriter { buffer, len: 0 }
    }

    /// A writer for a sysfs `show()` (or parameter `get()`) page: it fills at most
    /// `page.len() - 1` bytes, since sysfs takes a return of `PAGE_SIZE` or more for an
    /// overflow (fs/sysfs/file.c: "fill_read_buffer: ... returned bad count") and cuts it.
    pub fn sysfs_page(page: &'a mut [u8]) -> Self {
        let len = page.len().saturating_sub(1);
        SliceWriter {
            buffer: &mut page[..len],
            len: 0,
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes that can still be written.
    pub fn room(&self) -> usize {
        self.buffer.len() - self.len
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Write for SliceWriter<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let end = self.len.checked_add(text.len()).ok_or(fmt::Error)?;
        let room = self.buffer.get_mut(self.len..end).ok_or(fmt::Error)?;
        room.copy_from_slice(text.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    #[test]
    fn writes_until_full_then_fails() {
        let mut buffer = [0u8; 8];
        let mut out = SliceWriter::new(&mut buffer);
        assert!(out.is_empty());
        write!(out, "{}", 1234).unwrap();
        assert_eq!((out.len(), out.room()), (4, 4));
        assert!(out.write_str("56789").is_err());
        assert_eq!(out.len(), 4);
        out.write_str("5678").unwrap();
        assert_eq!(&buffer, b"12345678");
    }
}
