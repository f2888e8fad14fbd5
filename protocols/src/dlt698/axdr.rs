//! The A-XDR reader and writer under [`super::data`] and [`super::apdu`]: big-endian integers,
//! minimal lengths (`n`, `81 nn`, `82 nn nn`), offsets in errors, a nesting limit.

use super::error::Dlt698Error;

/// Deepest nesting of arrays, structures and wrapped APDUs accepted: far beyond any meter's
/// data (freeze records nest 3 levels), far below what would exhaust a stack.
pub const MAX_DEPTH: usize = 16;

pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    depth: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader {
            buf,
            pos: 0,
            depth: 0,
        }
    }
    pub fn pos(&self) -> usize {
        self.pos
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    pub fn finish(&self) -> Result<(), Dlt698Error> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(Dlt698Error::TrailingApdu {
                extra: self.remaining(),
                offset: self.pos,
            })
        }
    }
    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Dlt698Error> {
        if self.remaining() < n {
            return Err(Dlt698Error::ShortApdu {
                what,
                offset: self.pos,
                need: n - self.remaining(),
            });
        }
        let b = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(b)
    }
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], Dlt698Error> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N, what)?);
        Ok(out)
    }
    pub fn u8(&mut self, what: &'static str) -> Result<u8, Dlt698Error> {
        Ok(self.bytes(1, what)?[0])
    }
    pub fn u16(&mut self, what: &'static str) -> Result<u16, Dlt698Error> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }
    pub fn u32(&mut self, what: &'static str) -> Result<u32, Dlt698Error> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }
    pub fn u64(&mut self, what: &'static str) -> Result<u64, Dlt698Error> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }
    /// An A-XDR length; non-minimal and over-long forms are refused. A count larger than
    /// the bytes left is refused here, so no caller allocates for a forged count.
    pub fn len(&mut self, what: &'static str) -> Result<usize, Dlt698Error> {
        let n = self.count(what)?;
        if n > self.remaining() {
            return Err(Dlt698Error::ShortApdu {
                what,
                offset: self.pos,
                need: n - self.remaining(),
            });
        }
        Ok(n)
    }
    /// An A-XDR length that does not count bytes (a bit-string's bits), unchecked against
    /// what is left.
    pub fn count(&mut self, what: &'static str) -> Result<usize, Dlt698Error> {
        let at = self.pos;
        let first = self.u8(what)?;
        let n = match first {
            0..=0x7F => usize::from(first),
            0x81 => {
                let n = self.u8(what)?;
                if n < 0x80 {
                    return Err(Dlt698Error::BadLength {
                        offset: at,
                        why: "81 form for a length under 128",
                    });
                }
                usize::from(n)
            }
            0x82 => {
                let n = self.u16(what)?;
                if n < 0x100 {
                    return Err(Dlt698Error::BadLength {
                        offset: at,
                        why: "82 form for a length under 256",
                    });
                }
                usize::from(n)
            }
            _ => {
                return Err(Dlt698Error::BadLength {
                    offset: at,
                    why: "only 1-, 2- and 3-byte length forms fit a frame",
                })
            }
        };
        Ok(n)
    }
    /// `n` bytes after a length.
    pub fn octets(&mut self, what: &'static str) -> Result<Vec<u8>, Dlt698Error> {
        let n = self.len(what)?;
        Ok(self.bytes(n, what)?.to_vec())
    }
    /// A SEQUENCE OF: count, then `item` that many times.
    pub fn seq<T>(
        &mut self,
        what: &'static str,
        mut item: impl FnMut(&mut Reader<'a>) -> Result<T, Dlt698Error>,
    ) -> Result<Vec<T>, Dlt698Error> {
        let n = self.len(what)?;
        self.nested(|r| {
            let mut out = Vec::with_capacity(n.min(r.remaining()));
            for _ in 0..n {
                out.push(item(r)?);
            }
            Ok(out)
        })
    }
    /// An OPTIONAL: `00` absent, `01` then the value.
    pub fn optional<T>(
        &mut self,
        what: &'static str,
        item: impl FnOnce(&mut Reader<'a>) -> Result<T, Dlt698Error>,
    ) -> Result<Option<T>, Dlt698Error> {
        let at = self.pos;
        match self.u8(what)? {
            0 => Ok(None),
            1 => item(self).map(Some),
            choice => Err(Dlt698Error::UnknownChoice {
                what,
                choice,
                offset: at,
            }),
        }
    }
    /// Runs `f` one level deeper; refuses past [`MAX_DEPTH`].
    pub fn nested<T>(
        &mut self,
        f: impl FnOnce(&mut Reader<'a>) -> Result<T, Dlt698Error>,
    ) -> Result<T, Dlt698Error> {
        if self.depth >= MAX_DEPTH {
            return Err(Dlt698Error::TooDeep {
                limit: MAX_DEPTH,
                offset: self.pos,
            });
        }
        self.depth += 1;
        let r = f(self);
        self.depth -= 1;
        r
    }
    pub fn unknown(&self, what: &'static str, choice: u8) -> Dlt698Error {
        Dlt698Error::UnknownChoice {
            what,
            choice,
            offset: self.pos.saturating_sub(1),
        }
    }
}

/// The writer: a byte vector.
#[derive(Default)]
pub struct Writer {
    pub out: Vec<u8>,
}

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.out.extend_from_slice(b);
    }
    /// A minimal A-XDR length. Lengths past 65,535 cannot be framed at all.
    pub fn len(&mut self, n: usize) -> Result<(), Dlt698Error> {
        match n {
            0..=0x7F => self.out.push(n as u8),
            0x80..=0xFF => self.out.extend_from_slice(&[0x81, n as u8]),
            0x100..=0xFFFF => {
                self.out.push(0x82);
                self.u16(n as u16);
            }
            _ => {
                return Err(Dlt698Error::TooLong {
                    what: "A-XDR length",
                    len: n,
                })
            }
        }
        Ok(())
    }
    pub fn octets(&mut self, b: &[u8]) -> Result<(), Dlt698Error> {
        self.len(b.len())?;
        self.bytes(b);
        Ok(())
    }
    pub fn seq<T>(
        &mut self,
        items: &[T],
        mut item: impl FnMut(&mut Writer, &T) -> Result<(), Dlt698Error>,
    ) -> Result<(), Dlt698Error> {
        self.len(items.len())?;
        for i in items {
            item(self, i)?;
        }
        Ok(())
    }
    pub fn optional<T>(
        &mut self,
        v: &Option<T>,
        item: impl FnOnce(&mut Writer, &T) -> Result<(), Dlt698Error>,
    ) -> Result<(), Dlt698Error> {
        match v {
            None => {
                self.u8(0);
                Ok(())
            }
            Some(v) => {
                self.u8(1);
                item(self, v)
            }
        }
    }
}
