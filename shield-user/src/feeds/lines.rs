//! Reading a feed line by line with bounded memory: one reused buffer that
//! never grows past `MAX_LINE`, whatever the input; or, for a body already
//! in memory, borrowed slices of it with the same cuts and no copy.

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

/// The lines of a body already in memory, cut exactly as [`LineReader`]
/// cuts them (`\n` or `\r\n` ends, over-long lines truncated to
/// `MAX_LINE` and flagged, a last line without a newline kept), but
/// borrowed from the body instead of copied: the agent's refresh of a
/// million-line feed reads every line this way.
pub(crate) struct SliceLines<'a> {
    rest: &'a [u8],
    number: u64,
}

impl<'a> SliceLines<'a> {
    pub fn new(body: &'a [u8]) -> Self {
        SliceLines {
            rest: body,
            number: 0,
        }
    }
}

impl<'a> Iterator for SliceLines<'a> {
    type Item = Line<'a>;

    fn next(&mut self) -> Option<Line<'a>> {
        if self.rest.is_empty() {
            return None;
        }
        let (raw, ended) = match memchr::memchr(b'\n', self.rest) {
            Some(i) => {
                let raw = &self.rest[..i];
                self.rest = &self.rest[i + 1..];
                (raw, true)
            }
            None => (std::mem::take(&mut self.rest), false),
        };
        self.number += 1;
        // The reader sees `MAX_LINE + 1` bytes without a newline in them
        // exactly when the line (with any `\r`) is longer than `MAX_LINE`.
        let (bytes, overlong) = if raw.len() > MAX_LINE {
            (&raw[..MAX_LINE], true)
        } else if ended {
            (raw.strip_suffix(b"\r").unwrap_or(raw), false)
        } else {
            (raw, false)
        };
        Some(Line {
            number: self.number,
            bytes,
            overlong,
        })
    }
}

/// Cuts `body` into at most `parts` pieces of about equal size, each ending
/// just after a `\n` (the last one at the end of the body), so that every
/// line lies whole in exactly one piece.
pub(crate) fn split_at_lines(body: &[u8], parts: usize) -> Vec<&[u8]> {
    let parts = parts.max(1);
    let mut out = Vec::with_capacity(parts);
    let mut rest = body;
    for left in (1..=parts).rev() {
        if rest.is_empty() {
            break;
        }
        if left == 1 {
            out.push(rest);
            break;
        }
        let want = rest.len() / left;
        let cut = match memchr::memchr(b'\n', &rest[want..]) {
            Some(i) => want + i + 1,
            None => rest.len(),
        };
        let (piece, tail) = rest.split_at(cut);
        out.push(piece);
        rest = tail;
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

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

    fn slice_all(input: &[u8]) -> Vec<(u64, Vec<u8>, bool)> {
        SliceLines::new(input)
            .map(|l| (l.number, l.bytes.to_vec(), l.overlong))
            .collect()
    }

    #[test]
    fn slices_cut_like_the_reader_at_the_edges() {
        let long = |n: usize, end: &[u8]| {
            let mut v = vec![b'z'; n];
            v.extend_from_slice(end);
            v
        };
        let cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"\n".to_vec(),
            b"\r\n".to_vec(),
            b"\r".to_vec(),
            b"a\rb\n\n  c \r\nlast\r".to_vec(),
            long(MAX_LINE, b"\n"),
            long(MAX_LINE, b"\r\n"),
            long(MAX_LINE - 1, b"\r\n"),
            long(MAX_LINE + 1, b"\n"),
            long(MAX_LINE + 1, b""),
            long(MAX_LINE, b""),
            long(3 * MAX_LINE, b"\n1.2.3.4\n"),
        ];
        for c in &cases {
            assert_eq!(
                slice_all(c),
                read_all(c),
                "{:?}",
                String::from_utf8_lossy(c)
            );
        }
    }

    #[test]
    fn pieces_hold_whole_lines_and_cover_the_body() {
        let body = b"1.2.3.4\n\n10.0.0.0/8\r\nxx\nlast";
        for parts in 1..12 {
            let pieces = split_at_lines(body, parts);
            assert!(pieces.len() <= parts);
            assert_eq!(pieces.concat(), body.to_vec());
            for p in &pieces[..pieces.len() - 1] {
                assert!(p.ends_with(b"\n"), "{parts}: {pieces:?}");
            }
            let lines: Vec<_> = pieces.iter().flat_map(|p| slice_all(p)).collect();
            let want: Vec<_> = slice_all(body)
                .into_iter()
                .map(|(_, b, o)| (b, o))
                .collect();
            assert_eq!(
                lines
                    .into_iter()
                    .map(|(_, b, o)| (b, o))
                    .collect::<Vec<_>>(),
                want
            );
        }
        assert!(split_at_lines(b"", 4).is_empty());
        assert_eq!(split_at_lines(b"one line, no newline", 4).len(), 1);
    }

    proptest! {
        /// Whatever the bytes, the slices are the reader's lines.
        #[test]
        fn slices_agree_with_the_reader(
            pieces in prop::collection::vec(
                prop_oneof![
                    prop::collection::vec(any::<u8>(), 0..20),
                    Just(b"\r\n".to_vec()),
                    Just(b"\n".to_vec()),
                    (MAX_LINE - 2..MAX_LINE + 3).prop_map(|n| vec![b'x'; n]),
                ],
                0..12,
            ),
        ) {
            let input = pieces.concat();
            prop_assert_eq!(slice_all(&input), read_all(&input));
        }
    }
}
