//! `{name}` placeholders: a string field is parsed once into literal and variable segments (names
//! resolved to indices), then rendered per request without re-parsing. `{{` and `}}` are literal
//! braces; an unmatched brace or a name that no variable defines is an error at load time.

use std::borrow::Cow;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Lit(Box<str>),
    Var(usize),
}

/// A parsed string field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segs: Box<[Seg]>,
}

impl Template {
    /// A template without placeholders (CSV manifest cells are literal).
    pub fn literal(text: &str) -> Template {
        Template {
            segs: Box::new([Seg::Lit(text.into())]),
        }
    }

    /// Parse `text`, resolving each `{name}` against `vars`.
    pub fn parse(text: &str, vars: &[String]) -> Result<Template, String> {
        let mut segs = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(i) = rest.find(['{', '}']) {
            lit.push_str(&rest[..i]);
            let tail = &rest[i..];
            if let Some(after) = tail.strip_prefix("{{") {
                lit.push('{');
                rest = after;
            } else if let Some(after) = tail.strip_prefix("}}") {
                lit.push('}');
                rest = after;
            } else if tail.starts_with('}') {
                return Err(format!(
                    "unmatched `}}` in `{text}` (write `}}}}` for a literal brace)"
                ));
            } else {
                let close = tail[1..].find(['}', '{']).map(|j| j + 1);
                let Some(close) = close.filter(|&j| tail.as_bytes()[j] == b'}') else {
                    return Err(format!(
                        "unmatched `{{` in `{text}` (write `{{{{` for a literal brace)"
                    ));
                };
                let name = &tail[1..close];
                let Some(index) = vars.iter().position(|v| v == name) else {
                    let known = if vars.is_empty() {
                        "this job defines no variables".to_string()
                    } else {
                        format!(
                            "defined: {}",
                            vars.iter()
                                .map(|v| format!("`{v}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    };
                    return Err(format!("placeholder `{{{name}}}` is not defined ({known})"));
                };
                if !lit.is_empty() {
                    segs.push(Seg::Lit(std::mem::take(&mut lit).into()));
                }
                segs.push(Seg::Var(index));
                rest = &tail[close + 1..];
            }
        }
        lit.push_str(rest);
        if !lit.is_empty() || segs.is_empty() {
            segs.push(Seg::Lit(lit.into()));
        }
        Ok(Template { segs: segs.into() })
    }

    /// Render with the variable values of one request (indexed like the `vars` of [`Template::parse`]).
    pub fn render<'a>(&'a self, values: &[Arc<str>]) -> Cow<'a, str> {
        match &*self.segs {
            [Seg::Lit(s)] => Cow::Borrowed(s),
            [Seg::Var(i)] => Cow::Owned(values[*i].to_string()),
            segs => {
                let mut out = String::new();
                for seg in segs {
                    match seg {
                        Seg::Lit(s) => out.push_str(s),
                        Seg::Var(i) => out.push_str(&values[*i]),
                    }
                }
                Cow::Owned(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(v: &[&str]) -> Vec<Arc<str>> {
        v.iter().map(|s| Arc::from(*s)).collect()
    }

    #[test]
    fn renders_placeholders_and_escapes() {
        let vars = vec!["style".to_string(), "item".to_string()];
        let t = Template::parse("{style} photo of a {item} {{not a var}}", &vars).unwrap();
        assert_eq!(
            t.render(&vals(&["vintage", "bag"])),
            "vintage photo of a bag {not a var}"
        );
        assert_eq!(Template::parse("{{}}", &[]).unwrap().render(&[]), "{}");
        assert_eq!(Template::parse("", &[]).unwrap().render(&[]), "");
    }

    #[test]
    fn rejects_undefined_and_unmatched() {
        let vars = vec!["a".to_string()];
        assert!(
            Template::parse("{b}", &vars)
                .unwrap_err()
                .contains("`{b}` is not defined")
        );
        assert!(
            Template::parse("x { y", &vars)
                .unwrap_err()
                .contains("unmatched `{`")
        );
        assert!(
            Template::parse("x } y", &vars)
                .unwrap_err()
                .contains("unmatched `}`")
        );
        assert!(
            Template::parse("{a{a}", &vars)
                .unwrap_err()
                .contains("unmatched")
        );
    }
}
