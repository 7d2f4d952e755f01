//! Reports written as they are rendered. A 100,000-record journal's HTML
//! page is 20 MB; held whole (and then copied once more for masking) it
//! pushed `drctl report` past its memory target, so renderers write into a
//! [`Sink`], which hands its text on in pieces of about [`PIECE`] bytes,
//! and the CLI prints through [`Masked`], which masks secrets in a stream
//! whose pieces may split a secret in two.
//!
//! Nothing is written before the journal has verified and the report's
//! inputs are gathered (`cli::reportcmd`): a journal that fails its check
//! prints no report bytes, streamed or not.

use std::fmt;
use std::io::{self, Write};

/// Text is handed on once a buffer holds this much.
pub const PIECE: usize = 64 * 1024;

/// A renderer's output buffer: `String`'s API (renderers `push_str` and
/// `write!` into it), with [`Sink::piece`] at safe points to pass what it
/// holds to the writer, so a page is never held whole. The first write
/// error is kept and returned by [`Sink::finish`]; later text is dropped.
pub struct Sink<'w> {
    buf: String,
    w: &'w mut dyn Write,
    failed: Option<io::Error>,
}

impl<'w> Sink<'w> {
    pub fn new(w: &'w mut dyn Write) -> Sink<'w> {
        Sink {
            buf: String::with_capacity(PIECE + 4096),
            w,
            failed: None,
        }
    }

    /// Passes the buffer on once it holds a piece's worth.
    pub fn piece(&mut self) {
        if self.buf.len() >= PIECE {
            self.flush_buf();
        }
    }

    fn flush_buf(&mut self) {
        if self.failed.is_none() {
            if let Err(e) = self.w.write_all(self.buf.as_bytes()) {
                self.failed = Some(e);
            }
        }
        self.buf.clear();
    }

    /// Writes what is left; the first error a write met, if any.
    pub fn finish(mut self) -> io::Result<()> {
        self.flush_buf();
        match self.failed.take() {
            Some(e) => Err(e),
            None => self.w.flush(),
        }
    }
}

impl std::ops::Deref for Sink<'_> {
    type Target = String;
    fn deref(&self) -> &String {
        &self.buf
    }
}

impl std::ops::DerefMut for Sink<'_> {
    fn deref_mut(&mut self) -> &mut String {
        &mut self.buf
    }
}

/// Renders into memory what a renderer would write (tests, `report
/// verify`, the drill's stored report): the same code path as printing.
pub fn to_string(render: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> String {
    let mut v = Vec::new();
    // Writing to a Vec cannot fail; renderers write whole UTF-8 text.
    let _ = render(&mut v);
    String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Text escaped for HTML and SVG, written straight into the output (no
/// copy per value, which on a 47,000-row page was a tenth of its time);
/// the same escaping as [`super::esc`].
pub struct Esc<'a>(pub &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let mut from = 0;
        for (i, b) in s.bytes().enumerate() {
            let rep = match b {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                b'\'' => "&#39;",
                _ => continue,
            };
            f.write_str(&s[from..i])?;
            f.write_str(rep)?;
            from = i + 1;
        }
        f.write_str(&s[from..])
    }
}

/// A writer that masks registered secrets (`secret::redact`) in text that
/// arrives in pieces: it holds back the last bytes of each piece, fewer
/// than the longest secret, until the next piece shows whether they begin
/// one; an incomplete UTF-8 sequence at a piece's end waits likewise. It
/// also ends the output with a newline when the text did not, as
/// `ui::out` does for printed text.
pub struct Masked<W: Write> {
    inner: W,
    pending: Vec<u8>,
    last: Option<u8>,
}

impl<W: Write> Masked<W> {
    pub fn new(inner: W) -> Masked<W> {
        Masked {
            inner,
            pending: Vec::new(),
            last: None,
        }
    }

    /// Masks and writes what can be written; everything with `all`.
    fn drain(&mut self, all: bool) -> io::Result<()> {
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(s) => s.len(),
            Err(e) => e.valid_up_to(),
        };
        let text = String::from_utf8_lossy(&self.pending[..valid]);
        let masked = crate::secret::redact(&text);
        let keep = if all {
            0
        } else {
            crate::secret::longest().saturating_sub(1)
        };
        let mut cut = masked.len().saturating_sub(keep);
        while !masked.is_char_boundary(cut) {
            cut -= 1;
        }
        let out = &masked.as_bytes()[..cut];
        if let Some(&b) = out.last() {
            self.last = Some(b);
        }
        self.inner.write_all(out)?;
        let mut rest = masked.as_bytes()[cut..].to_vec();
        rest.extend_from_slice(&self.pending[valid..]);
        self.pending = rest;
        Ok(())
    }

    /// Writes everything held back, the closing newline, and flushes.
    pub fn finish(mut self) -> io::Result<W> {
        self.drain(true)?;
        if !self.pending.is_empty() {
            // Not UTF-8 (renderers write text): pass it on as it is.
            self.inner.write_all(&self.pending)?;
            self.last = self.pending.last().copied();
            self.pending.clear();
        }
        if self.last != Some(b'\n') {
            self.inner.write_all(b"\n")?;
        }
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for Masked<W> {
    /// Takes a large write (a whole Markdown report) a piece at a time,
    /// so it is not copied whole.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for part in buf.chunks(PIECE) {
            self.pending.extend_from_slice(part);
            if self.pending.len() >= PIECE {
                self.drain(false)?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esc_matches_the_allocating_escape() {
        for s in ["", "plain", "<a href=\"x\">'&'</a>", "ü & ☃ <", "&&"] {
            assert_eq!(Esc(s).to_string(), super::super::esc(s), "{s}");
        }
    }

    /// A secret split across two pieces is masked whole, and text is
    /// otherwise passed on byte for byte, with the newline `ui::out` adds.
    #[test]
    fn a_secret_split_between_pieces_is_masked() {
        let secret = "s3cr3t-split-between-pieces";
        crate::secret::register(secret);
        let mut text = "x".repeat(PIECE - 10);
        text.push_str(secret);
        text.push_str(" and ü after");
        let mut m = Masked::new(Vec::new());
        // Pieces cut inside the secret and inside the two-byte `ü`.
        let bytes = text.as_bytes();
        let cut_in_u = bytes.len() - " after".len() - 1;
        m.write_all(&bytes[..PIECE - 3]).expect("write");
        m.write_all(&bytes[PIECE - 3..cut_in_u]).expect("write");
        m.write_all(&bytes[cut_in_u..]).expect("write");
        let out = String::from_utf8(m.finish().expect("finish")).expect("utf-8");
        assert!(!out.contains(secret), "secret printed");
        assert_eq!(
            out,
            format!("{}\n", text.replace(secret, crate::secret::MASK))
        );
    }

    #[test]
    fn sink_passes_pieces_on_and_keeps_the_text_whole() {
        let mut v = Vec::new();
        let mut s = Sink::new(&mut v);
        for i in 0..20_000 {
            use std::fmt::Write as _;
            let _ = write!(s, "row {i};");
            s.piece();
        }
        s.finish().expect("finish");
        let want: String = (0..20_000).map(|i| format!("row {i};")).collect();
        assert_eq!(String::from_utf8(v).expect("utf-8"), want);
    }
}
