//! Schema: the parsed body against the route's compiled JSON Schema.

use crate::rejection::{Rejection, Violation};
use jsonschema::error::ValidationErrorKind;
use serde_json::Value;

/// Enough to fix a payload; a hostile one should not make the error body huge.
const MAX_DETAILS: usize = 20;

/// A detail's path and message echo the sender's input (property names, values): at most this
/// many characters of each (PRODUCT.md §3).
const MAX_ECHO: usize = 100;

/// `text` cut to `MAX_ECHO` characters, marked with `…` where cut.
fn excerpt(mut text: String) -> String {
    if let Some((at, _)) = text.char_indices().nth(MAX_ECHO) {
        text.truncate(at);
        text.push('…');
    }
    text
}

pub fn check(schema: &jsonschema::Validator, body: &Value) -> Result<(), Rejection> {
    let details: Vec<Violation> = schema
        .iter_errors(body)
        .take(MAX_DETAILS)
        .map(|e| {
            let mut path = e.instance_path().to_string();
            // A missing property is reported at its own pointer, not its parent's.
            if let ValidationErrorKind::Required { property } = e.kind() {
                let name = property
                    .as_str()
                    .map_or_else(|| property.to_string(), str::to_string);
                path.push('/');
                path.push_str(&name.replace('~', "~0").replace('/', "~1"));
            }
            Violation {
                path: excerpt(path),
                message: excerpt(e.to_string()),
            }
        })
        .collect();
    if details.is_empty() {
        Ok(())
    } else {
        Err(Rejection::SchemaViolation(details))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn violations_name_their_pointer() {
        let schema = jsonschema::validator_for(&json!({
            "type": "object",
            "required": ["job_id", "event"],
            "properties": { "job_id": {"type": "string"}, "n": {"type": "integer"} }
        }))
        .unwrap();
        assert_eq!(
            check(&schema, &json!({"job_id": "j", "event": "e"})),
            Ok(())
        );
        let Err(Rejection::SchemaViolation(d)) = check(&schema, &json!({"event": "e", "n": "x"}))
        else {
            panic!("expected a violation")
        };
        let paths: Vec<_> = d.iter().map(|v| v.path.as_str()).collect();
        assert!(paths.contains(&"/job_id"), "{paths:?}");
        assert!(paths.contains(&"/n"), "{paths:?}");
    }

    #[test]
    fn details_echo_at_most_100_characters_of_the_input() {
        let schema = jsonschema::validator_for(&json!({
            "type": "object",
            "properties": { "n": {"type": "integer"} },
            "additionalProperties": {"type": "integer"}
        }))
        .unwrap();
        let huge = "x".repeat(500_000);
        let mut body = serde_json::Map::new();
        body.insert("n".into(), json!(huge));
        for i in 0..50 {
            body.insert(format!("{i}{}", "k".repeat(300)), json!("v"));
        }
        let Err(Rejection::SchemaViolation(d)) = check(&schema, &Value::Object(body)) else {
            panic!("expected a violation")
        };
        assert_eq!(d.len(), 20);
        for v in &d {
            assert!(v.message.chars().count() <= 101, "{}", v.message.len());
            assert!(v.path.chars().count() <= 101, "{}", v.path.len());
        }
    }
}
