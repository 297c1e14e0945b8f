//! Schema: the parsed body against the route's compiled JSON Schema.

use crate::rejection::{Rejection, Violation};
use jsonschema::error::ValidationErrorKind;
use serde_json::Value;

/// Enough to fix a payload; a hostile one should not make the error body huge.
const MAX_DETAILS: usize = 20;

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
                path,
                message: e.to_string(),
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
}
