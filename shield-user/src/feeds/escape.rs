//! Making a hostile line safe to show: cut short, every byte that is not
//! printable ASCII escaped. A rejected line goes to logs, terminals and JSON
//! reports; an escape sequence or a bidi override in it must arrive inert.

use std::fmt::Write as _;

/// Output length after which the text is cut.
const MAX_SHOWN: usize = 80;

/// `line` as printable ASCII, at most about `MAX_SHOWN` characters (plus an
/// ellipsis when cut). Invalid UTF-8 shows as `\xNN`, other non-printable
/// characters as `\t`, `\r`, `\0` or `\u{NNNN}`, and a backslash as `\\`, so
/// the text is unambiguous.
pub(crate) fn shown(line: &[u8]) -> String {
    let mut out = String::with_capacity(MAX_SHOWN + 8);
    for chunk in line.utf8_chunks() {
        for c in chunk.valid().chars() {
            if out.len() >= MAX_SHOWN {
                out.push('…');
                return out;
            }
            match c {
                ' '..='~' if c != '\\' => out.push(c),
                '\\' => out.push_str("\\\\"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                '\n' => out.push_str("\\n"),
                '\0' => out.push_str("\\0"),
                // Writing to a String cannot fail.
                _ => _ = write!(out, "\\u{{{:x}}}", u32::from(c)),
            }
        }
        for b in chunk.invalid() {
            if out.len() >= MAX_SHOWN {
                out.push('…');
                return out;
            }
            _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn printable_ascii_is_kept() {
        assert_eq!(shown(b"10.0.0.0/33 ; SBL1"), "10.0.0.0/33 ; SBL1");
    }

    #[test]
    fn control_and_non_ascii_are_escaped() {
        assert_eq!(shown(b"1.2.3.4\x00\t\x1b[31m"), "1.2.3.4\\0\\t\\u{1b}[31m");
        assert_eq!(shown("a\u{202e}b".as_bytes()), "a\\u{202e}b");
        assert_eq!(shown(b"\xff\xfe1"), "\\xff\\xfe1");
        assert_eq!(shown(b"a\\x41"), "a\\\\x41");
    }

    #[test]
    fn long_lines_are_cut() {
        let long = vec![b'7'; 5000];
        let s = shown(&long);
        assert_eq!(s.chars().count(), 81, "{s}");
        assert!(s.ends_with('…'));
        // Escapes count towards the cut too, so a line of junk stays short.
        let s = shown(&[0xffu8; 5000]);
        assert!(s.len() < 100, "{}", s.len());
        assert_eq!(shown(&[b'1'; 80]), "1".repeat(80));
    }
}
