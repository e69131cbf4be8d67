//! The YAML limits ([`crate::limits`]), checked before a manifest is built from the text.
//!
//! Three checks, in the order a hostile file would hurt:
//!
//! 1. [`read`]: the file's size, before it is read (and while it is read: it may grow).
//! 2. [`flow_depth`]: the nesting of `[`/`{` collections, by a scan of the text that the YAML
//!    parser never sees if it fails. The parser's time grows with the square of that nesting
//!    (200 KB of `[` took a minute), so it cannot be measured by parsing. The scan knows enough
//!    YAML to skip quoted scalars, comments and block scalars, and to tell a collection's `[`
//!    from a bracket inside plain text; what it cannot tell, it counts (a false count needs more
//!    than [`YAML_DEPTH`](crate::limits::YAML_DEPTH) unclosed brackets at the start of plain
//!    text).
//! 3. [`measure`]: one walk over the parsed events, aliases followed, that counts values, text
//!    and depth and stops at the first limit passed — before anything proportional to the
//!    expanded size is built (a "billion laughs" file is stopped after a million values).

use std::cell::Cell;
use std::fmt;
use std::io::Read;
use std::path::Path;

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Visitor};

use crate::limits::{self, YAML_DEPTH, YAML_FILE_BYTES, YAML_TEXT_BYTES, YAML_VALUES};

/// Read a YAML manifest whole, refusing a file over [`YAML_FILE_BYTES`] before reading it.
pub(crate) fn read(path: &Path) -> Result<String, String> {
    let file = crate::files::open_regular(path).map_err(|e| cannot_read(&e))?;
    let too_big = || {
        format!(
            "the manifest is larger than {}, the limit for a YAML manifest (README \"Limits\"); put many rows in a CSV manifest or a `for_each` table",
            limits::bytes(YAML_FILE_BYTES)
        )
    };
    if file.metadata().map_err(|e| cannot_read(&e))?.len() > YAML_FILE_BYTES {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    file.take(YAML_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| cannot_read(&e))?;
    if bytes.len() as u64 > YAML_FILE_BYTES {
        return Err(too_big());
    }
    String::from_utf8(bytes).map_err(|e| {
        let line = 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count();
        format!("line {line}: the text is not valid UTF-8 (save the file as UTF-8)")
    })
}

fn cannot_read(e: &std::io::Error) -> String {
    format!("cannot read the manifest: {e}")
}

/// Where the nesting of `[`/`{` collections first passes `max`: `(line, column)`, from 1.
pub(crate) fn flow_depth(text: &str, max: usize) -> Option<(usize, usize)> {
    let b = text.as_bytes();
    let (mut depth, mut line, mut line_start) = (0usize, 1usize, 0usize);
    // Whether a node may start here (so a `[` opens a collection, a quote a quoted scalar).
    let mut node_start = true;
    let mut i = 0;
    let space = |i: usize| i >= b.len() || matches!(b[i], b' ' | b'\t' | b'\r' | b'\n');
    while i < b.len() {
        let c = b[i];
        match c {
            b'\n' => {
                line += 1;
                line_start = i + 1;
                node_start = true;
            }
            b' ' | b'\t' | b'\r' => {}
            b'#' if i == 0 || space(i - 1) => {
                while i + 1 < b.len() && b[i + 1] != b'\n' {
                    i += 1;
                }
            }
            b'-' if i == line_start && b[i..].starts_with(b"---") && space(i + 3) => {
                i += 2;
                node_start = true;
            }
            b'[' | b'{' if node_start || depth > 0 => {
                depth += 1;
                if depth > max {
                    return Some((line, i - line_start + 1));
                }
                node_start = true;
            }
            b']' | b'}' if depth > 0 => {
                depth -= 1;
                node_start = false;
            }
            b',' if depth > 0 => node_start = true,
            b'"' | b'\'' if node_start => {
                // A quoted scalar: to its closing quote (`\"` escapes in double quotes, `''` in
                // single ones), counting the lines it spans.
                i += 1;
                while i < b.len() {
                    match b[i] {
                        b'\\' if c == b'"' => i += 1,
                        b'\'' if c == b'\'' && b.get(i + 1) == Some(&b'\'') => i += 1,
                        q if q == c => break,
                        b'\n' => {
                            line += 1;
                            line_start = i + 1;
                        }
                        _ => {}
                    }
                    i += 1;
                }
                node_start = false;
            }
            b'|' | b'>' if node_start && depth == 0 => {
                // A block scalar: every following line indented more than the key it belongs
                // to (after any `- ` of sequence entries), or blank.
                let mut key = line_start;
                loop {
                    while key < i && b[key] == b' ' {
                        key += 1;
                    }
                    if key < i && matches!(b[key], b'-' | b'?') && space(key + 1) {
                        key += 1;
                    } else {
                        break;
                    }
                }
                let indent = key - line_start;
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                while i < b.len() {
                    let next = i + 1;
                    let spaces = b[next..].iter().take_while(|c| **c == b' ').count();
                    let rest = next + spaces;
                    let blank = rest >= b.len() || matches!(b[rest], b'\n' | b'\r');
                    if !blank && spaces <= indent {
                        break;
                    }
                    line += 1;
                    line_start = next;
                    i = b[next..]
                        .iter()
                        .position(|c| *c == b'\n')
                        .map_or(b.len(), |p| next + p);
                }
                continue;
            }
            b'-' | b'?' if node_start && space(i + 1) => {}
            b':' if space(i + 1)
                || depth > 0
                || (i > 0 && matches!(b[i - 1], b'"' | b'\'' | b']' | b'}')) =>
            {
                node_start = true
            }
            b'&' | b'!' if node_start => {
                // An anchor or a tag: its name, then the node it is put on.
                while i + 1 < b.len() && !space(i + 1) && !matches!(b[i + 1], b'[' | b'{' | b',') {
                    i += 1;
                }
            }
            _ => node_start = false,
        }
        i += 1;
    }
    None
}

/// What a YAML text holds once its aliases are expanded, as far as [`measure`] went.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    values: u64,
    text: u64,
}

/// Walk the YAML `text` (aliases followed) and stop at the first limit passed: more than
/// [`YAML_VALUES`] values, [`YAML_TEXT_BYTES`] of text, or [`YAML_DEPTH`] levels. The error is
/// the parser's (it carries the line and column), a syntax error included.
pub(crate) fn measure(text: &str) -> Result<(), serde_yaml::Error> {
    let counts = Cell::new(Counts::default());
    Walk {
        counts: &counts,
        depth: 0,
    }
    .deserialize(serde_yaml::Deserializer::from_str(text))
}

/// One node of the walk: counts itself, then its children one level deeper.
#[derive(Clone, Copy)]
struct Walk<'a> {
    counts: &'a Cell<Counts>,
    depth: usize,
}

impl Walk<'_> {
    fn count<E: de::Error>(self, text: usize) -> Result<(), E> {
        let mut c = self.counts.get();
        c.values += 1;
        c.text += text as u64;
        self.counts.set(c);
        if c.values > YAML_VALUES {
            return Err(E::custom(format!(
                "the manifest holds more than {YAML_VALUES} values once its aliases are expanded (README \"Limits\")"
            )));
        }
        if c.text > YAML_TEXT_BYTES {
            return Err(E::custom(format!(
                "the manifest holds more than {} of text once its aliases are expanded (README \"Limits\")",
                limits::bytes(YAML_TEXT_BYTES)
            )));
        }
        Ok(())
    }

    fn child<E: de::Error>(self) -> Result<Self, E> {
        if self.depth >= YAML_DEPTH {
            return Err(E::custom(format!(
                "the manifest is nested deeper than {YAML_DEPTH} levels (README \"Limits\")"
            )));
        }
        Ok(Walk {
            counts: self.counts,
            depth: self.depth + 1,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.count(0)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.count(0)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.count(0)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.count(0)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.count(v.len())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.count(0)
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.count(0)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.count(0)?;
        let child = self.child()?;
        while seq.next_element_seed(child)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.count(0)?;
        let child = self.child()?;
        while map.next_key_seed(child)?.is_some() {
            map.next_value_seed(child)?;
        }
        Ok(())
    }
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        // A tagged value (`!tag value`): the tag, then the value.
        let (_, variant) = data.variant_seed(self)?;
        de::VariantAccess::newtype_variant_seed(variant, self.child()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_error(text: &str) -> Option<(usize, usize)> {
        flow_depth(text, 3)
    }

    #[test]
    fn flow_nesting_is_measured_and_text_that_only_looks_nested_is_not() {
        assert_eq!(depth_error("a: [[[[x]]]]\n"), Some((1, 7)));
        assert_eq!(depth_error("a: [[[x]]]\nb: [[[y]]]\n"), None);
        assert_eq!(depth_error("- {a: [{b: [1]}]}\n"), Some((1, 12)));
        assert_eq!(depth_error("x:\n  - [\n  [\n  [\n  [\n"), Some((5, 3)));
        assert_eq!(depth_error("--- [[[[\n"), Some((1, 8)));
        assert_eq!(depth_error("a: &x !!seq [[[[1]]]]\n"), Some((1, 16)));
        // Brackets inside text: plain, quoted, commented, in a block scalar.
        for text in [
            "prompt: a [[[[[ b\n",
            "prompt: \"[[[[[\"\n",
            "prompt: '[[[[['' [[[['\n",
            "prompt: x # [[[[[\n",
            "prompt: |\n  [[[[[\n  - [[[[[\n\n  {{{{{\nnext: 1\n",
            "jobs:\n- prompt: >\n    [[[[[[\n  id: a\n",
            "- - k: |\n      [[[[[\n",
            "prompt: \"a \\\" [[[[[\"\n",
        ] {
            assert_eq!(depth_error(text), None, "{text}");
        }
        // A sibling key after an empty block scalar is read, not skipped.
        assert_eq!(depth_error("- a: |\n  b: [[[[1]]]]\n"), Some((2, 9)));
        // The line count goes on after a block scalar and a quoted scalar over lines.
        assert_eq!(
            depth_error("p: |\n  x\nq: \"a\n b\"\nr: [[[[1]]]]\n"),
            Some((5, 7))
        );
    }

    #[test]
    fn aliases_are_counted_each_time_they_are_used() {
        let mut laughs = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            laughs.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        // Nested aliases stop at the YAML reader's own bound on alias uses.
        let e = measure(&laughs).unwrap_err().to_string();
        assert!(e.contains("repetition limit exceeded"), "{e}");
        // A long list used by many aliases stops at the value count, with its place.
        let list = vec!["v"; 2_000].join(", ");
        let uses: String = (0..600).map(|i| format!("  k{i}: *big\n")).collect();
        let wide = format!("big: &big [{list}]\nm:\n{uses}");
        let e = measure(&wide).unwrap_err().to_string();
        assert!(e.contains("more than 1000000 values"), "{e}");
        assert!(e.contains("line "), "the place is given: {e}");
        let text = format!(
            "big: &big \"{}\"\nm: [{}]\n",
            "x".repeat(1 << 20),
            vec!["*big"; 65].join(", ")
        );
        let e = measure(&text).unwrap_err().to_string();
        assert!(e.contains("more than 64 MiB of text"), "{e}");
        assert!(
            measure("jobs: [{id: a, matrix: {x: &v [1, 2]}}, {id: b, matrix: {y: *v}}]").is_ok()
        );
        let deep = format!(
            "a:\n{}",
            (1..40)
                .map(|i| format!("{}- \n", "  ".repeat(i)))
                .collect::<String>()
        );
        let e = measure(&deep).unwrap_err().to_string();
        assert!(e.contains("deeper than 32"), "{e}");
        assert!(measure("a: [").is_err(), "a syntax error is an error");
    }
}
