//! Splitting one CSV / TSV line into fields (RFC 4180 quoting, `""` escapes).
//!
//! Records are single lines: CTD never puts a newline inside a field, so a quote
//! still open at the end of the line is reported as unterminated.

/// Where a field's bytes are: in the line itself or, for quoted fields with
/// escapes removed, in the splitter's scratch buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Span {
    /// `line[start..end]`.
    Line(usize, usize),
    /// `scratch[start..end]`.
    Scratch(usize, usize),
}

/// Splits lines, reusing its buffers between calls.
#[derive(Debug, Default)]
pub(crate) struct Splitter {
    /// Spans of the last line's fields.
    pub spans: Vec<Span>,
    /// Unescaped contents of quoted fields.
    pub scratch: Vec<u8>,
}

/// Why a line could not be split; carries the index of the offending field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SplitError {
    /// The field at this index opens a quote that never closes.
    UnterminatedQuote(usize),
}

impl Splitter {
    /// Splits `line` (without its line terminator) on `delim`.
    pub fn split(&mut self, line: &[u8], delim: u8) -> Result<(), SplitError> {
        self.spans.clear();
        self.scratch.clear();
        if memchr::memchr(b'"', line).is_none() {
            let mut start = 0;
            for pos in memchr::memchr_iter(delim, line) {
                self.spans.push(Span::Line(start, pos));
                start = pos + 1;
            }
            self.spans.push(Span::Line(start, line.len()));
            return Ok(());
        }
        self.split_quoted(line, delim)
    }

    fn split_quoted(&mut self, line: &[u8], delim: u8) -> Result<(), SplitError> {
        let mut i = 0;
        let n = line.len();
        loop {
            if i < n && line[i] == b'"' {
                // Quoted field: copy into scratch, unescaping "".
                let s0 = self.scratch.len();
                i += 1;
                let mut closed = false;
                while i < n {
                    match memchr::memchr(b'"', &line[i..]) {
                        None => {
                            self.scratch.extend_from_slice(&line[i..]);
                            i = n;
                        }
                        Some(off) => {
                            self.scratch.extend_from_slice(&line[i..i + off]);
                            i += off + 1;
                            if i < n && line[i] == b'"' {
                                self.scratch.push(b'"');
                                i += 1;
                            } else {
                                closed = true;
                                break;
                            }
                        }
                    }
                }
                if !closed {
                    return Err(SplitError::UnterminatedQuote(self.spans.len()));
                }
                // Lenient: text between the closing quote and the delimiter is kept.
                let end = memchr::memchr(delim, &line[i..]).map_or(n, |o| i + o);
                self.scratch.extend_from_slice(&line[i..end]);
                self.spans.push(Span::Scratch(s0, self.scratch.len()));
                i = end;
            } else {
                let end = memchr::memchr(delim, &line[i..]).map_or(n, |o| i + o);
                self.spans.push(Span::Line(i, end));
                i = end;
            }
            if i >= n {
                return Ok(());
            }
            i += 1; // skip the delimiter
            if i == n {
                // Trailing delimiter: one more, empty field.
                self.spans.push(Span::Line(n, n));
                return Ok(());
            }
        }
    }

    /// The bytes of field `k` of `line`.
    #[inline]
    pub fn field<'a>(&'a self, line: &'a [u8], k: usize) -> &'a [u8] {
        match self.spans[k] {
            Span::Line(a, b) => &line[a..b],
            Span::Scratch(a, b) => &self.scratch[a..b],
        }
    }
}

/// Quotes `s` for CSV output if it holds the delimiter, a quote or a line break.
/// `delim` must be ASCII.
pub(crate) fn write_field(out: &mut String, s: &str, delim: char) {
    let d = delim as u8;
    let needs_quotes = delim.is_ascii()
        && (memchr::memchr3(d, b'"', b'\n', s.as_bytes()).is_some()
            || memchr::memchr(b'\r', s.as_bytes()).is_some());
    if needs_quotes {
        out.push('"');
        for c in s.chars() {
            if c == '"' {
                out.push('"');
            }
            out.push(c);
        }
        out.push('"');
    } else {
        out.push_str(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(line: &str, delim: u8) -> Result<Vec<String>, SplitError> {
        let mut s = Splitter::default();
        s.split(line.as_bytes(), delim)?;
        Ok((0..s.spans.len())
            .map(|k| String::from_utf8(s.field(line.as_bytes(), k).to_vec()).unwrap())
            .collect())
    }

    #[test]
    fn plain_and_quoted_fields() {
        assert_eq!(fields("a,b,,c", b',').unwrap(), ["a", "b", "", "c"]);
        assert_eq!(
            fields(r#"A,1,"Diabetes Mellitus, Type 2",MESH:D1"#, b',').unwrap(),
            ["A", "1", "Diabetes Mellitus, Type 2", "MESH:D1"]
        );
        assert_eq!(
            fields(r#""say ""hi""",x"#, b',').unwrap(),
            [r#"say "hi""#, "x"]
        );
        assert_eq!(fields(r#"x,"""#, b',').unwrap(), ["x", ""]);
        assert_eq!(fields(r#""a",b,"#, b',').unwrap(), ["a", "b", ""]);
        assert_eq!(fields("a\tb, c\t", b'\t').unwrap(), ["a", "b, c", ""]);
        assert_eq!(fields("", b',').unwrap(), [""]);
    }

    #[test]
    fn unterminated_quote_names_the_field() {
        assert_eq!(
            fields(r#"a,"open, never closed"#, b','),
            Err(SplitError::UnterminatedQuote(1))
        );
        assert_eq!(
            fields(r#""a"""#, b','),
            Err(SplitError::UnterminatedQuote(0))
        );
    }

    #[test]
    fn write_then_split_round_trips() {
        for s in ["plain", "with, comma", r#"with "quote""#, ""] {
            let mut line = String::new();
            write_field(&mut line, s, ',');
            line.push(',');
            write_field(&mut line, "z", ',');
            assert_eq!(fields(&line, b',').unwrap(), [s, "z"]);
        }
    }
}
