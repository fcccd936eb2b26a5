//! RecordIO framing of the Mesos streaming APIs: `<decimal length>\n<bytes>` repeated, with
//! no meaning attached to chunk boundaries. The decoder buffers across chunks, refuses a
//! zero or over-limit length before buffering the body, and never panics on garbage.

use bytes::{Buf, Bytes, BytesMut};

use super::Error;

/// Longest accepted length prefix: u64::MAX has 20 digits.
const MAX_PREFIX_DIGITS: usize = 20;

/// Encode one record.
pub fn encode(record: &[u8]) -> Vec<u8> {
    let mut out = format!("{}\n", record.len()).into_bytes();
    out.extend_from_slice(record);
    out
}

/// Incremental RecordIO decoder: feed chunks with [`Decoder::push`], take records with
/// [`Decoder::next_record`]. After an error the decoder stays failed.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    max: u64,
    /// Length of the record being read, once its prefix has been parsed.
    pending: Option<usize>,
    failed: bool,
}

impl Decoder {
    /// A decoder that refuses records longer than `max_record_bytes`.
    pub fn new(max_record_bytes: u64) -> Decoder {
        Decoder {
            buf: BytesMut::new(),
            max: max_record_bytes,
            pending: None,
            failed: false,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Bytes held but not yet returned as records.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete record, `Ok(None)` when more bytes are needed.
    pub fn next_record(&mut self) -> Result<Option<Bytes>, Error> {
        if self.failed {
            self.buf.clear();
            return Err(Error::BadPrefix {
                prefix: "<decoder already failed>".into(),
            });
        }
        let r = self.step();
        if r.is_err() {
            self.failed = true;
            self.buf.clear();
        }
        r
    }

    fn step(&mut self) -> Result<Option<Bytes>, Error> {
        let len = match self.pending {
            Some(len) => len,
            None => {
                let Some(nl) = self
                    .buf
                    .iter()
                    .take(MAX_PREFIX_DIGITS + 1)
                    .position(|b| *b == b'\n')
                else {
                    if self.buf.len() > MAX_PREFIX_DIGITS {
                        return Err(self.bad_prefix(MAX_PREFIX_DIGITS + 1));
                    }
                    if let Some(i) = self.buf.iter().position(|b| !b.is_ascii_digit()) {
                        return Err(self.bad_prefix(i + 1));
                    }
                    return Ok(None);
                };
                let digits = &self.buf[..nl];
                if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                    return Err(self.bad_prefix(nl));
                }
                // At most 20 ASCII digits: parse cannot fail except on overflow.
                let len: u64 = std::str::from_utf8(digits)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| self.bad_prefix(nl))?;
                if len == 0 {
                    return Err(Error::ZeroLength);
                }
                if len > self.max {
                    return Err(Error::RecordTooLarge { len, max: self.max });
                }
                self.buf.advance(nl + 1);
                let len = usize::try_from(len)
                    .map_err(|_| Error::RecordTooLarge { len, max: self.max })?;
                self.pending = Some(len);
                len
            }
        };
        if self.buf.len() < len {
            return Ok(None);
        }
        self.pending = None;
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    fn bad_prefix(&self, upto: usize) -> Error {
        let end = upto.min(self.buf.len()).min(32);
        Error::BadPrefix {
            prefix: String::from_utf8_lossy(&self.buf[..end]).into_owned(),
        }
    }

    /// Call at end of stream: an error when a record was cut short.
    pub fn finish(&self) -> Result<(), Error> {
        if self.buf.is_empty() && self.pending.is_none() {
            Ok(())
        } else {
            Err(Error::Truncated {
                buffered: self.buf.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn drain(d: &mut Decoder) -> Result<Vec<Vec<u8>>, Error> {
        let mut out = Vec::new();
        while let Some(r) = d.next_record()? {
            out.push(r.to_vec());
        }
        Ok(out)
    }

    #[test]
    fn reads_records_split_anywhere() {
        let mut d = Decoder::new(1024);
        d.push(b"5\nhel");
        assert!(drain(&mut d).unwrap().is_empty());
        d.push(b"lo3\nabc1");
        assert_eq!(drain(&mut d).unwrap(), [b"hello".to_vec(), b"abc".to_vec()]);
        d.push(b"\nx");
        assert_eq!(drain(&mut d).unwrap(), [b"x".to_vec()]);
        d.finish().unwrap();
    }

    #[test]
    fn zero_huge_and_garbage_prefixes_are_errors() {
        let mut d = Decoder::new(1024);
        d.push(b"0\n");
        assert!(matches!(d.next_record(), Err(Error::ZeroLength)));
        let mut d = Decoder::new(1 << 20);
        // A 10 GiB prefix is refused before a byte of the body is buffered.
        d.push(b"10737418240\n{");
        let e = d.next_record().unwrap_err();
        assert!(
            matches!(
                e,
                Error::RecordTooLarge {
                    len: 10737418240,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("10737418240"));
        assert_eq!(d.buffered(), 0);
        let mut d = Decoder::new(1024);
        d.push(b"{\"type\":\"HEARTBEAT\"}");
        assert!(matches!(d.next_record(), Err(Error::BadPrefix { .. })));
        let mut d = Decoder::new(1024);
        d.push(b"99999999999999999999999999");
        assert!(matches!(d.next_record(), Err(Error::BadPrefix { .. })));
        let mut d = Decoder::new(1024);
        d.push(b"\n");
        assert!(matches!(d.next_record(), Err(Error::BadPrefix { .. })));
        let mut d = Decoder::new(1024);
        d.push(b"5\nab");
        assert!(drain(&mut d).unwrap().is_empty());
        assert!(matches!(d.finish(), Err(Error::Truncated { buffered: 2 })));
    }

    proptest! {
        #[test]
        fn arbitrary_chunking_gives_the_same_records(
            records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..200), 0..20),
            cuts in proptest::collection::vec(any::<usize>(), 0..30),
        ) {
            let wire: Vec<u8> = records.iter().flat_map(|r| encode(r)).collect();
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
            cuts.push(wire.len());
            cuts.sort_unstable();
            let mut d = Decoder::new(200);
            let mut got = Vec::new();
            let mut at = 0;
            for c in cuts {
                d.push(&wire[at..c]);
                at = c;
                got.extend(drain(&mut d).unwrap());
            }
            prop_assert_eq!(got, records);
            prop_assert!(d.finish().is_ok());
        }

        #[test]
        fn garbage_never_panics_and_memory_stays_bounded(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..20),
        ) {
            let mut d = Decoder::new(100);
            for c in chunks {
                d.push(&c);
                loop {
                    match d.next_record() {
                        Ok(Some(r)) => prop_assert!(!r.is_empty() && r.len() <= 100),
                        Ok(None) => break,
                        Err(_) => { prop_assert_eq!(d.buffered(), 0); break; }
                    }
                }
                // Never more than one record, its prefix and the last chunk held.
                prop_assert!(d.buffered() <= 100 + 21 + 64);
            }
        }
    }
}
