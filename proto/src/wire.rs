//! Primitive encodings of packet bodies (SPEC §1.4): big-endian integers, strings as a u16
//! length then UTF-8 bytes, and the payload as all remaining bytes.
//!
//! [`Reader`] never reads past its slice: every read checks the length first and fails with
//! `Truncated` naming the field. Strings are limited to [`MAX_STRING`] bytes both ways, because
//! WuKongIM's Go decoder reads the length as a signed i16.

use crate::ProtoError;

/// The longest string every SDK decoder accepts.
pub const MAX_STRING: usize = i16::MAX as usize;

/// Reads fields from one packet body, front to back.
pub struct Reader<'a> {
    /// The bytes not read yet.
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(body: &'a [u8]) -> Self {
        Self { rest: body }
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], ProtoError> {
        if self.rest.len() < n {
            return Err(ProtoError::Truncated { field });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], ProtoError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    pub fn u8(&mut self, field: &'static str) -> Result<u8, ProtoError> {
        Ok(self.array::<1>(field)?[0])
    }
    pub fn u16(&mut self, field: &'static str) -> Result<u16, ProtoError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }
    pub fn u32(&mut self, field: &'static str) -> Result<u32, ProtoError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }
    pub fn i32(&mut self, field: &'static str) -> Result<i32, ProtoError> {
        Ok(i32::from_be_bytes(self.array(field)?))
    }
    pub fn u64(&mut self, field: &'static str) -> Result<u64, ProtoError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }
    pub fn i64(&mut self, field: &'static str) -> Result<i64, ProtoError> {
        Ok(i64::from_be_bytes(self.array(field)?))
    }

    /// A u16-length-prefixed UTF-8 string of at most [`MAX_STRING`] bytes.
    pub fn string(&mut self, field: &'static str) -> Result<String, ProtoError> {
        let len = usize::from(self.u16(field)?);
        if len > MAX_STRING {
            return Err(ProtoError::StringTooLong {
                field,
                len,
                max: MAX_STRING,
            });
        }
        let bytes = self.take(len, field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| ProtoError::BadUtf8 { field })
    }

    /// All bytes not read yet (the payload, always the last field).
    pub fn rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.rest).to_vec()
    }
}

pub fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}
pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}
pub fn put_i32(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_be_bytes());
}
pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}
pub fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Writes `s` with its u16 length; over [`MAX_STRING`] bytes is an error.
pub fn put_string(out: &mut Vec<u8>, field: &'static str, s: &str) -> Result<(), ProtoError> {
    let len = u16::try_from(s.len())
        .ok()
        .filter(|&l| usize::from(l) <= MAX_STRING)
        .ok_or(ProtoError::StringTooLong {
            field,
            len: s.len(),
            max: MAX_STRING,
        })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}
