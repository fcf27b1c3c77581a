//! Reading a feed line by line with bounded memory: one reused buffer that
//! never grows past `MAX_LINE`, whatever the input.

use std::io::{self, BufRead, Read as _};

use super::MAX_LINE;

/// One line, borrowed from the reader's buffer until the next read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Line<'a> {
    /// 1-based.
    pub number: u64,
    /// The line without its `\n` or `\r\n`. For an over-long line, only the
    /// first `MAX_LINE` bytes.
    pub bytes: &'a [u8],
    /// The line was longer than `MAX_LINE`; the rest was skipped.
    pub overlong: bool,
}

pub(crate) struct LineReader<R> {
    input: R,
    buf: Vec<u8>,
    number: u64,
}

impl<R: BufRead> LineReader<R> {
    pub fn new(input: R) -> Self {
        LineReader {
            input,
            buf: Vec::with_capacity(MAX_LINE + 1),
            number: 0,
        }
    }

    /// The next line, or `None` at the end of input.
    pub fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        self.buf.clear();
        // `take` caps what `read_until` may append, and `read_until` finds
        // the newline with std's vectorised search, so a normal line costs
        // one scan and one copy. One byte over the cap is how an over-long
        // line shows itself.
        let limit = (MAX_LINE + 1) as u64;
        let n = (&mut self.input)
            .take(limit)
            .read_until(b'\n', &mut self.buf)?;
        if n == 0 {
            return Ok(None);
        }
        self.number += 1;
        let mut overlong = false;
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
        } else if self.buf.len() > MAX_LINE {
            // Drop the rest of the line unread into memory. It may be
            // gigabytes; `skip_until` only ever holds the reader's own buffer.
            self.input.skip_until(b'\n')?;
            self.buf.truncate(MAX_LINE);
            overlong = true;
        }
        // else: the last line, without a newline.
        Ok(Some(Line {
            number: self.number,
            bytes: &self.buf,
            overlong,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as (number, text, overlong), read through a tiny buffer so that
    /// lines straddle refills.
    fn read_all(input: &[u8]) -> Vec<(u64, Vec<u8>, bool)> {
        let mut r = LineReader::new(io::BufReader::with_capacity(7, input));
        let mut out = Vec::new();
        while let Some(l) = r.next_line().unwrap() {
            out.push((l.number, l.bytes.to_vec(), l.overlong));
        }
        out
    }

    #[test]
    fn splits_lf_crlf_and_a_last_line_without_newline() {
        let got = read_all(b"1.2.3.4\r\n\n  5.6.7.8 \nlast");
        assert_eq!(
            got,
            vec![
                (1, b"1.2.3.4".to_vec(), false),
                (2, b"".to_vec(), false),
                (3, b"  5.6.7.8 ".to_vec(), false),
                (4, b"last".to_vec(), false),
            ]
        );
        assert!(read_all(b"").is_empty());
        assert_eq!(read_all(b"\n"), vec![(1, Vec::new(), false)]);
    }

    #[test]
    fn a_lone_cr_is_not_a_line_end() {
        assert_eq!(read_all(b"a\rb\n"), vec![(1, b"a\rb".to_vec(), false)]);
    }

    #[test]
    fn over_long_lines_are_cut_and_skipped_whole() {
        let mut input = vec![b'x'; 3 * MAX_LINE];
        input.extend_from_slice(b"\n1.2.3.4\n");
        input.extend_from_slice(&[b'y'; MAX_LINE + 1]);
        let got = read_all(&input);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].0, 1);
        assert_eq!(got[0].1.len(), MAX_LINE);
        assert!(got[0].2);
        assert_eq!(got[1], (2, b"1.2.3.4".to_vec(), false));
        // One byte over the cap, at the end of input without a newline.
        assert_eq!((got[2].0, got[2].1.len(), got[2].2), (3, MAX_LINE, true));
    }

    #[test]
    fn the_cap_is_inclusive() {
        // MAX_LINE bytes before the newline, and MAX_LINE bytes at EOF: both
        // fit.
        let mut input = vec![b'a'; MAX_LINE];
        input.push(b'\n');
        input.extend_from_slice(&[b'b'; MAX_LINE]);
        let got = read_all(&input);
        assert_eq!(got.len(), 2);
        assert!(!got[0].2 && !got[1].2);
        assert_eq!((got[0].1.len(), got[1].1.len()), (MAX_LINE, MAX_LINE));
    }
}
