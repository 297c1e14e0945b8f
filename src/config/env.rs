//! `${VAR}` and `${VAR:-default}` expansion in configuration strings.

/// Expands every `${VAR}` / `${VAR:-default}` in `text` from `lookup`.
/// An unset variable without a default is an error naming it: a secret must never silently be "".
pub fn expand(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated ${{...}} in {:?}", redact(text)))?;
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("invalid variable name {name:?} in ${{...}}"));
        }
        // Like the shell's `:-`, a set-but-empty variable takes the default.
        let value = lookup(name).filter(|v| !v.is_empty() || default.is_none());
        match (value, default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(format!(
                    "environment variable {name} is not set (and has no ${{{name}:-default}})"
                ))
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Config text that may hold a secret is never echoed back whole.
fn redact(text: &str) -> String {
    if text.len() > 8 {
        format!(
            "{}…",
            &text[..text.char_indices().nth(8).map_or(text.len(), |(i, _)| i)]
        )
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SECRET" => Some("s3cr3t".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_set_and_default() {
        assert_eq!(expand("${SECRET}", env).unwrap(), "s3cr3t");
        assert_eq!(expand("a-${SECRET}-b", env).unwrap(), "a-s3cr3t-b");
        assert_eq!(expand("${NOPE:-fallback}", env).unwrap(), "fallback");
        assert_eq!(expand("${EMPTY:-fallback}", env).unwrap(), "fallback");
        assert_eq!(expand("plain", env).unwrap(), "plain");
    }

    #[test]
    fn unset_without_default_fails_closed() {
        let err = expand("${NOPE}", env).unwrap_err();
        assert!(err.contains("NOPE"), "{err}");
        assert!(expand("${SECRET", env).is_err());
        assert!(expand("${bad name}", env).is_err());
    }
}
