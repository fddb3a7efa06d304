//! `${VAR}` and `${VAR:-default}` substitution in configuration text.

use std::fmt::Write as _;

/// A reference to an environment variable that is not set and has no default.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: ${{{var}}} is not set (give it a default with ${{{var}:-value}})")]
pub struct UnsetVar {
    /// The 1-based line of the reference.
    pub line: usize,
    /// The variable's name.
    pub var: String,
}

/// Replaces `${VAR}` and `${VAR:-default}` with values from `lookup`; `$$` stands for `$`.
/// Comment lines (first non-blank character `#`) are left as they are. A variable that is set
/// but empty takes the default, as in the shell.
pub fn substitute(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, UnsetVar> {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
            } else if let Some(body) = after.strip_prefix('{')
                && let Some(end) = body.find('}')
            {
                let inner = &body[..end];
                let (var, default) = match inner.split_once(":-") {
                    Some((v, d)) => (v, Some(d)),
                    None => (inner, None),
                };
                match (lookup(var).filter(|v| !v.is_empty()), default) {
                    (Some(v), _) => out.push_str(&v),
                    (None, Some(d)) => out.push_str(d),
                    (None, None) => {
                        return Err(UnsetVar {
                            line: i + 1,
                            var: var.to_owned(),
                        });
                    }
                }
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        let _ = write!(out, "{rest}");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("kafka:9092".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_set_variables_and_defaults() {
        let text = "a: ${HOST}\nb: ${NOPE:-/var/lib}/x\nc: ${EMPTY:-d}\nd: $$5 and $ alone\n";
        assert_eq!(
            substitute(text, env).unwrap(),
            "a: kafka:9092\nb: /var/lib/x\nc: d\nd: $5 and $ alone\n"
        );
    }

    #[test]
    fn an_unset_variable_without_default_names_its_line() {
        let err = substitute("a: 1\nb: ${MISSING}\n", env).unwrap_err();
        assert_eq!(
            err,
            UnsetVar {
                line: 2,
                var: "MISSING".into()
            }
        );
        assert!(err.to_string().contains("${MISSING}"));
    }

    #[test]
    fn comments_are_left_alone() {
        assert_eq!(
            substitute("  # ${MISSING}\n", env).unwrap(),
            "  # ${MISSING}\n"
        );
    }
}
