//! An import file's text as UTF-8 lines, whatever encoding wrote it: MetaTrader 5 exports
//! ticks and bars as UTF-16LE with a byte order mark by default, spreadsheets often put a BOM
//! before UTF-8. Files run to gigabytes, so UTF-16 is decoded a buffer at a time behind a
//! `BufRead` (with std's `char::decode_utf16`), never read whole.

use std::{
    cell::Cell,
    fmt,
    io::{self, BufRead, BufReader, Cursor, Read},
    rc::Rc,
};

/// Raw bytes decoded per refill of a UTF-16 file; the `BufReader` over it reads lines.
const CHUNK: usize = 1 << 20;

/// How the file's bytes are text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Utf8,
    /// UTF-8 behind a byte order mark (`EF BB BF`), which is dropped.
    Utf8Bom,
    Utf16Le,
    Utf16Be,
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Encoding::Utf8 => "UTF-8",
            Encoding::Utf8Bom => "UTF-8 with BOM",
            Encoding::Utf16Le => "UTF-16LE",
            Encoding::Utf16Be => "UTF-16BE",
        })
    }
}

/// The encoding the first bytes announce, and how many of them are a byte order mark.
///
/// Without a BOM, a NUL beside the first byte means UTF-16 (a text file starts with a
/// printable character, which UTF-8 never writes next to a NUL); anything else is UTF-8.
pub fn sniff(head: &[u8]) -> (Encoding, usize) {
    match head {
        [0xEF, 0xBB, 0xBF, ..] => (Encoding::Utf8Bom, 3),
        [0xFF, 0xFE, ..] => (Encoding::Utf16Le, 2),
        [0xFE, 0xFF, ..] => (Encoding::Utf16Be, 2),
        [a, 0, ..] if *a != 0 => (Encoding::Utf16Le, 0),
        [0, b, ..] if *b != 0 => (Encoding::Utf16Be, 0),
        _ => (Encoding::Utf8, 0),
    }
}

/// Counts the raw bytes read through it (the progress bar shows the file's bytes, which for
/// UTF-16 are not the decoded ones).
struct Counted<R> {
    inner: R,
    read: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

/// A file's text, ready to be read as lines.
pub struct Text {
    /// The text as UTF-8, any BOM dropped.
    pub lines: Box<dyn BufRead>,
    pub encoding: Encoding,
    /// Raw bytes of the file consumed so far.
    pub raw_read: Rc<Cell<u64>>,
}

/// `reader`'s text as UTF-8 lines, in the encoding its first bytes announce ([`sniff`]).
pub fn lines<R: Read + 'static>(reader: R) -> io::Result<Text> {
    let read = Rc::new(Cell::new(0));
    let mut raw = Counted {
        inner: reader,
        read: read.clone(),
    };
    let mut head = [0u8; 3];
    let mut got = 0;
    while got < head.len() {
        match raw.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let (encoding, bom) = sniff(&head[..got]);
    let rest = Cursor::new(head[bom..got].to_vec()).chain(raw);
    let lines: Box<dyn BufRead> = match encoding {
        Encoding::Utf8 | Encoding::Utf8Bom => Box::new(BufReader::with_capacity(CHUNK, rest)),
        Encoding::Utf16Le | Encoding::Utf16Be => Box::new(BufReader::with_capacity(
            CHUNK,
            Utf16ToUtf8::new(rest, encoding == Encoding::Utf16Be, bom as u64),
        )),
    };
    Ok(Text {
        lines,
        encoding,
        raw_read: read,
    })
}

/// UTF-16 bytes in, UTF-8 bytes out, a chunk at a time.
struct Utf16ToUtf8<R> {
    inner: R,
    big_endian: bool,
    /// Bytes read but not decoded yet: an odd trailing byte, or a high surrogate whose low
    /// half is in the next chunk.
    raw: Vec<u8>,
    out: Vec<u8>,
    pos: usize,
    /// File offset of `raw[0]`, for error messages.
    offset: u64,
    eof: bool,
}

impl<R: Read> Utf16ToUtf8<R> {
    fn new(inner: R, big_endian: bool, offset: u64) -> Self {
        Utf16ToUtf8 {
            inner,
            big_endian,
            raw: Vec::with_capacity(CHUNK + 4),
            out: Vec::with_capacity(CHUNK * 3 / 2),
            pos: 0,
            offset,
            eof: false,
        }
    }

    /// Reads the next chunk and decodes every complete character in it into `out`.
    fn fill(&mut self) -> io::Result<()> {
        self.out.clear();
        self.pos = 0;
        let carried = self.raw.len();
        self.raw.resize(carried + CHUNK, 0);
        let n = loop {
            match self.inner.read(&mut self.raw[carried..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.raw.truncate(carried);
                    return Err(e);
                }
            }
        };
        self.raw.truncate(carried + n);
        if n == 0 {
            self.eof = true;
            if self.raw.len() % 2 == 1 {
                return Err(invalid(format!(
                    "UTF-16 file ends in half a character (an odd number of bytes, at byte {})",
                    self.offset + self.raw.len() as u64 - 1
                )));
            }
        }
        let big_endian = self.big_endian;
        let unit = |pair: &[u8]| {
            let pair = [pair[0], pair[1]];
            if big_endian {
                u16::from_be_bytes(pair)
            } else {
                u16::from_le_bytes(pair)
            }
        };
        let mut units = self.raw.len() / 2;
        // A high surrogate at the end waits for its low half in the next chunk.
        if !self.eof && units > 0 && (0xD800..0xDC00).contains(&unit(&self.raw[2 * units - 2..])) {
            units -= 1;
        }
        let mut at = 0usize;
        let raw = &self.raw[..2 * units];
        for c in char::decode_utf16(raw.chunks_exact(2).map(unit)) {
            match c {
                Ok(c) => {
                    let mut b = [0u8; 4];
                    self.out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                    at += c.len_utf16();
                }
                Err(e) => {
                    return Err(invalid(format!(
                        "not UTF-16: unpaired surrogate 0x{:04X} at byte {}",
                        e.unpaired_surrogate(),
                        self.offset + 2 * at as u64
                    )))
                }
            }
        }
        self.raw.drain(..2 * units);
        self.offset += 2 * units as u64;
        Ok(())
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl<R: Read> Read for Utf16ToUtf8<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.out.len() {
            if self.eof {
                return Ok(0);
            }
            self.fill()?;
        }
        let n = buf.len().min(self.out.len() - self.pos);
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out at most `step` bytes per read, so characters and surrogate pairs straddle
    /// reads the way they straddle chunks of a big file.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.step).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn read_all(bytes: Vec<u8>, step: usize) -> io::Result<(String, Encoding, u64)> {
        let mut t = lines(Trickle {
            data: bytes,
            at: 0,
            step,
        })?;
        let mut s = String::new();
        t.lines.read_to_string(&mut s)?;
        Ok((s, t.encoding, t.raw_read.get()))
    }

    fn utf16(text: &str, bom: bool, be: bool) -> Vec<u8> {
        let mut out = Vec::new();
        if bom {
            out.extend_from_slice(if be { &[0xFE, 0xFF] } else { &[0xFF, 0xFE] });
        }
        for u in text.encode_utf16() {
            out.extend_from_slice(&if be { u.to_be_bytes() } else { u.to_le_bytes() });
        }
        out
    }

    const TEXT: &str = "<DATE>\t<TIME>\t<BID>\r\n2024.01.02\t10:00:00.125\t1.10345\r\né €𝄞 end\n";

    #[test]
    fn every_encoding_reads_as_the_same_text() {
        let mut bom8 = vec![0xEF, 0xBB, 0xBF];
        bom8.extend_from_slice(TEXT.as_bytes());
        let cases = [
            (TEXT.as_bytes().to_vec(), Encoding::Utf8),
            (bom8, Encoding::Utf8Bom),
            (utf16(TEXT, true, false), Encoding::Utf16Le),
            (utf16(TEXT, true, true), Encoding::Utf16Be),
            (utf16(TEXT, false, false), Encoding::Utf16Le),
            (utf16(TEXT, false, true), Encoding::Utf16Be),
        ];
        for (bytes, want) in cases {
            let len = bytes.len() as u64;
            // 1 and 3 bytes per read split every unit and every surrogate pair.
            for step in [1, 2, 3, 7, 4096] {
                let (text, enc, raw) = read_all(bytes.clone(), step).unwrap();
                assert_eq!((text.as_str(), enc), (TEXT, want), "step {step}");
                assert_eq!(raw, len, "every raw byte is counted");
            }
        }
        assert_eq!(read_all(Vec::new(), 1).unwrap().0, "");
        assert_eq!(read_all(vec![0xFF, 0xFE], 1).unwrap().0, "");
    }

    /// A surrogate pair across the decoder's own chunk boundary (not just the reader's).
    #[test]
    fn surrogate_pair_across_chunks() {
        // One of these lengths puts the pair's halves in two chunks, whatever the alignment.
        for before in CHUNK / 2 - 3..=CHUNK / 2 {
            let mut text = "a".repeat(before);
            text.push('𝄞');
            text.push_str("z\n");
            let bytes = utf16(&text, true, false);
            assert_eq!(read_all(bytes, CHUNK).unwrap().0, text, "{before}");
        }
    }

    #[test]
    fn broken_utf16_is_an_error_with_its_offset() {
        let mut odd = utf16("ab", true, false);
        odd.push(b'c');
        let e = read_all(odd, 4096).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(
            e.to_string().contains("odd number of bytes, at byte 6"),
            "{e}"
        );
        let mut lone = utf16("ab", true, false);
        lone.extend_from_slice(&0xDC00u16.to_le_bytes());
        lone.extend_from_slice(&utf16("c", false, false));
        let e = read_all(lone, 4096).unwrap_err();
        assert!(
            e.to_string()
                .contains("unpaired surrogate 0xDC00 at byte 6"),
            "{e}"
        );
        let mut unfinished = utf16("ab", true, false);
        unfinished.extend_from_slice(&0xD834u16.to_le_bytes());
        let e = read_all(unfinished, 4096).unwrap_err();
        assert!(e.to_string().contains("0xD834"), "{e}");
    }
}
