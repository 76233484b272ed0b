//! The pieces of the pinned binary encodings (records, device bindings, audit rows): integers
//! big-endian, optional omnis as a flag byte plus 32 bytes, byte strings with a `u16` length.

use super::DecodeError;
use crate::omni::Omni;

/// Appends a `u16` length and the bytes (callers bound lengths far below `u16::MAX`).
pub fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&bytes[..usize::from(len)]);
}

/// Appends `0`, or `1` and the omni.
pub fn put_omni(out: &mut Vec<u8>, omni: Option<&Omni>) {
    match omni {
        None => out.push(0),
        Some(o) => {
            out.push(1);
            out.extend_from_slice(o.as_bytes());
        }
    }
}

/// A cursor over an encoding; every read is bounds-checked.
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A cursor at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(DecodeError::Malformed(self.pos))?;
        let slice = self
            .bytes
            .get(self.pos..end)
            .ok_or(DecodeError::Malformed(self.pos))?;
        self.pos = end;
        Ok(slice)
    }

    /// The next `N` bytes.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let at = self.pos;
        self.take(N)?
            .try_into()
            .map_err(|_| DecodeError::Malformed(at))
    }

    /// The next byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    /// The next big-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// The next big-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// The next length-prefixed byte string.
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// The next length-prefixed UTF-8 string.
    pub fn string(&mut self) -> Result<String, DecodeError> {
        let at = self.pos;
        let raw = self.bytes()?;
        String::from_utf8(raw.to_vec()).map_err(|_| DecodeError::Malformed(at))
    }

    /// The next optional omni (flag byte, then 32 bytes).
    pub fn omni(&mut self) -> Result<Option<Omni>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(Omni::from_bytes(self.array()?))),
            _ => Err(DecodeError::Malformed(self.pos - 1)),
        }
    }

    /// How many bytes were read (for error positions).
    pub fn position(&self) -> usize {
        self.pos
    }

    /// `Err` unless every byte was read.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err(DecodeError::Malformed(self.pos))
        }
    }
}
