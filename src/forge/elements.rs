//! The elements of a JSON array read as its bytes arrive, one element in memory at a time: a
//! listing whose entries carry long texts (a pull request's description) costs its largest
//! entry in memory, not its page. Only the array's structure is followed (strings, escapes,
//! nesting); each element is parsed by whoever receives it.

/// What the reader found between two commas of the array.
pub(crate) enum Element<'a> {
    /// A whole element, as its bytes.
    Whole(&'a [u8]),
    /// An element longer than the bound: dropped as it arrived.
    Over,
}

pub(crate) struct Elements {
    limit: usize,
    current: Vec<u8>,
    over: bool,
    /// Nesting depth, the array itself being 1; 0 before its `[`.
    depth: usize,
    in_string: bool,
    escaped: bool,
    ended: bool,
    /// The text does not begin with `[`: nothing of it is kept.
    not_array: bool,
}

impl Elements {
    /// A reader keeping at most `limit` bytes of one element.
    pub(crate) fn new(limit: usize) -> Elements {
        Elements {
            limit,
            current: Vec::new(),
            over: false,
            depth: 0,
            in_string: false,
            escaped: false,
            ended: false,
            not_array: false,
        }
    }

    /// Reads `data`, calling `each` for every element it completes.
    pub(crate) fn feed(&mut self, data: &[u8], each: &mut dyn FnMut(Element)) {
        for &b in data {
            if self.ended || self.not_array {
                return;
            }
            if self.depth == 0 {
                match b {
                    b'[' => self.depth = 1,
                    _ if b.is_ascii_whitespace() => {}
                    _ => self.not_array = true,
                }
                continue;
            }
            if self.in_string {
                self.push(b);
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => {
                    self.in_string = true;
                    self.push(b);
                }
                b'{' | b'[' => {
                    self.depth += 1;
                    self.push(b);
                }
                b'}' | b']' if self.depth > 1 => {
                    self.depth -= 1;
                    self.push(b);
                }
                b']' => {
                    self.emit(each);
                    self.ended = true;
                }
                b',' if self.depth == 1 => self.emit(each),
                _ => self.push(b),
            }
        }
    }

    /// Whether the whole array was read.
    pub(crate) fn complete(&self) -> bool {
        self.ended
    }

    fn push(&mut self, b: u8) {
        if self.over {
            return;
        }
        if self.current.len() == self.limit {
            self.over = true;
            self.current = Vec::new();
            return;
        }
        self.current.push(b);
    }

    fn emit(&mut self, each: &mut dyn FnMut(Element)) {
        if self.over {
            each(Element::Over);
        } else if !self.current.trim_ascii().is_empty() {
            each(Element::Whole(self.current.trim_ascii()));
        }
        self.current.clear();
        self.over = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&str], limit: usize) -> (Vec<String>, bool) {
        let mut reader = Elements::new(limit);
        let mut found = Vec::new();
        for chunk in chunks {
            reader.feed(chunk.as_bytes(), &mut |e| {
                found.push(match e {
                    Element::Whole(bytes) => String::from_utf8(bytes.to_vec()).unwrap(),
                    Element::Over => "OVER".into(),
                })
            });
        }
        (found, reader.complete())
    }

    #[test]
    fn elements_are_found_across_chunks_strings_and_nesting_and_long_ones_are_dropped() {
        let (found, done) = split(&[" [ {\"a\": \"x,]}\\\"\", \"b\": [1, {\"c\": 2}]}", " , 3 ,\"s\"", "]"], 100);
        assert_eq!(found, [r#"{"a": "x,]}\"", "b": [1, {"c": 2}]}"#, "3", r#""s""#]);
        assert!(done);
        let (found, done) = split(&[r#"[{"body": "#, &format!("\"{}\"}}, {{\"n\": 1}}", "x".repeat(500)), "]"], 100);
        assert_eq!(found, ["OVER", r#"{"n": 1}"#]);
        assert!(done);
        assert_eq!(split(&["[1, {\"n\": 2"], 100), (vec!["1".to_string()], false), "cut short");
        assert_eq!(split(&["[]"], 10), (vec![], true));
        assert_eq!(split(&["{\"message\": \"Not Found\"}"], 10), (vec![], false), "not an array");
    }
}
