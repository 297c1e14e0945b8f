//! Events: the event name at the route's pointer must be a wanted one. A body without it counts
//! as an unwanted event.

use crate::config::{Events, Otherwise};
use crate::rejection::{Answer, Rejection};
use serde_json::Value;

pub fn check(events: &Events, body: &Value) -> Result<(), Answer> {
    let name = body.pointer(&events.pointer).and_then(Value::as_str);
    if name.is_some_and(|n| events.allow.iter().any(|a| a == n)) {
        return Ok(());
    }
    Err(match events.otherwise {
        Otherwise::Ignore => Answer::Ignored,
        Otherwise::Reject => Answer::Reject(Rejection::EventNotAllowed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn events(otherwise: Otherwise) -> Events {
        Events {
            pointer: "/event".into(),
            allow: vec!["job.completed".into()],
            otherwise,
        }
    }

    #[test]
    fn wanted_ignored_or_rejected() {
        let e = events(Otherwise::Ignore);
        assert_eq!(check(&e, &json!({"event": "job.completed"})), Ok(()));
        assert_eq!(
            check(&e, &json!({"event": "job.queued"})),
            Err(Answer::Ignored)
        );
        assert_eq!(check(&e, &json!({})), Err(Answer::Ignored));
        assert_eq!(check(&e, &json!({"event": 7})), Err(Answer::Ignored));
        let e = events(Otherwise::Reject);
        assert_eq!(
            check(&e, &json!({"event": "x"})),
            Err(Answer::Reject(Rejection::EventNotAllowed))
        );
    }
}
