//! Which of a queue route's destinations an accepted delivery goes to: those whose `events`
//! list has its event and whose `when` condition holds (PRODUCT.md §9).

use crate::config::{Mode, Route};
use http::HeaderMap;
use std::sync::Arc;

/// The destinations chosen, in config order, and the conditions that could not be evaluated
/// (counted as false; the caller logs them once the delivery has its id).
#[derive(Debug, Default)]
pub struct Selection {
    pub destinations: Vec<String>,
    pub failed_conditions: Vec<(Arc<str>, String)>,
}

pub fn select(
    route: &Route,
    headers: &HeaderMap,
    json: Option<&serde_json::Value>,
    event: Option<&str>,
) -> Selection {
    let mut selection = Selection::default();
    let Mode::Queue(queue) = &route.mode else {
        return selection;
    };
    for d in &queue.destinations {
        let wanted = match (&d.events, event) {
            (None, _) => true,
            (Some(allowed), Some(event)) => allowed.iter().any(|a| a == event),
            (Some(_), None) => false,
        };
        if !wanted {
            continue;
        }
        if let Some(condition) = &d.when {
            match condition.holds(json, headers, event) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    selection.failed_conditions.push((d.name.clone(), e));
                    continue;
                }
            }
        }
        selection.destinations.push(d.name.to_string());
    }
    selection
}
