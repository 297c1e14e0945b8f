//! A destination's `when` (PRODUCT.md §9): a CEL expression compiled once at load, evaluated on
//! each accepted delivery's parsed body, its lower-cased headers and its event.

use http::HeaderMap;
use std::collections::HashMap;

pub struct Condition {
    program: cel::Program,
}

impl Condition {
    /// Compiles `source`; the error is the parser's message, for `check`.
    pub fn compile(source: &str) -> Result<Self, String> {
        let program = cel::Program::compile(source).map_err(|e| {
            let text = e.to_string();
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            format!("{source:?} is not a CEL expression: {}", first.trim())
        })?;
        Ok(Self { program })
    }

    /// Whether the delivery goes to this destination. An expression that cannot be evaluated
    /// on this delivery (a missing field, a type mismatch) or is not a boolean is an error,
    /// which the caller counts as false.
    pub fn holds(
        &self,
        body: Option<&serde_json::Value>,
        headers: &HeaderMap,
        event: Option<&str>,
    ) -> Result<bool, String> {
        let mut context = cel::Context::default();
        let body = cel::to_value(body.unwrap_or(&serde_json::Value::Null))
            .map_err(|e| format!("body: {e}"))?;
        context.add_variable_from_value("body", body);
        let mut named: HashMap<String, String> = HashMap::new();
        for (name, value) in headers {
            let value = String::from_utf8_lossy(value.as_bytes());
            named
                .entry(name.as_str().to_string())
                .and_modify(|v| {
                    v.push_str(", ");
                    v.push_str(&value);
                })
                .or_insert_with(|| value.into_owned());
        }
        let headers = cel::to_value(named).map_err(|e| format!("headers: {e}"))?;
        context.add_variable_from_value("headers", headers);
        context.add_variable_from_value(
            "event",
            event.map_or(cel::Value::Null, |e| cel::Value::from(e.to_string())),
        );
        match self.program.execute(&context) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(_) => Err("the condition is not true or false on this delivery".into()),
            Err(e) => Err(described(&e)),
        }
    }
}

/// What went wrong, without the values involved: they come from the body, which is never logged.
fn described(e: &cel::ExecutionError) -> String {
    use cel::ExecutionError as E;
    match e {
        E::NoSuchKey(key) => format!("no such key: {key}"),
        E::UndeclaredReference(name) => format!("undeclared reference to {name}"),
        E::UnexpectedType { got, want } => format!("unexpected type: got {got}, want {want}"),
        E::InvalidArgumentCount { expected, actual } => {
            format!("{actual} arguments where {expected} are expected")
        }
        _ => "a value of this delivery does not fit the condition's types".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn nested_fields_headers_and_the_event_are_visible() {
        let body = json!({"result": {"total_amount": 1500.0, "tags": ["a", "b"]}});
        let h = headers(&[("X-Shop-Region", "eu")]);
        let holds = |src: &str| {
            Condition::compile(src)
                .unwrap()
                .holds(Some(&body), &h, Some("job.completed"))
        };
        assert_eq!(holds("body.result.total_amount > 1000.0"), Ok(true));
        assert_eq!(holds("body.result.total_amount > 2000.0"), Ok(false));
        assert_eq!(holds("headers['x-shop-region'] == 'eu'"), Ok(true));
        assert_eq!(
            holds("event == 'job.completed' && 'b' in body.result.tags"),
            Ok(true)
        );
        assert_eq!(holds("event.startsWith('job.')"), Ok(true));
    }

    #[test]
    fn a_missing_field_or_a_non_boolean_is_an_error_not_true() {
        let body = json!({"a": 1});
        let h = HeaderMap::new();
        let c = Condition::compile("body.nope.deeper > 1").unwrap();
        assert!(c.holds(Some(&body), &h, None).is_err());
        let c = Condition::compile("body.a").unwrap();
        assert!(c.holds(Some(&body), &h, None).is_err());
    }

    #[test]
    fn a_bad_expression_does_not_compile() {
        let e = Condition::compile("body.a >").err().unwrap();
        assert!(e.contains("not a CEL expression"), "{e}");
    }
}
