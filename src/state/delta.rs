//! RFC 7396 merge patches between two versions of a key's payload (SPEC 16.3).
//!
//! Hand-written rather than taken from a crate: the one generator on crates.io is a
//! single-release port, and ours must refuse what a merge patch cannot say (a member
//! set to `null`, a payload that is not an object) instead of emitting a patch that
//! would apply to something else. Patches are checked against `json-patch`'s
//! `merge` (the maintained implementation of applying them) in the tests.

use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// The patch turning `old` into `new`, when one can express it.
pub fn merge_patch(old: &Value, new: &Value) -> Option<Value> {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => diff(o, n).map(Value::Object),
        _ => None,
    }
}

fn diff(old: &Map<String, Value>, new: &Map<String, Value>) -> Option<Map<String, Value>> {
    let mut patch = Map::new();
    for (k, v) in old {
        if !new.contains_key(k) {
            patch.insert(k.clone(), Value::Null);
        } else if let Some(n) = new.get(k) {
            if n == v {
                continue;
            }
            let part = match (v, n) {
                (Value::Object(a), Value::Object(b)) => Value::Object(diff(a, b)?),
                // `null` in a patch removes the member: a member that becomes null
                // cannot be said.
                (_, Value::Null) => return None,
                (_, n) => settable(n)?,
            };
            patch.insert(k.clone(), part);
        }
    }
    for (k, n) in new {
        if !old.contains_key(k) {
            if n.is_null() {
                return None;
            }
            patch.insert(k.clone(), settable(n)?);
        }
    }
    Some(patch)
}

/// A value set as it is: objects inside it are merged into `{}` when applied, which
/// drops their null members, so those cannot be sent this way.
fn settable(v: &Value) -> Option<Value> {
    fn has_null_member(v: &Value) -> bool {
        match v {
            Value::Object(m) => m.values().any(|x| x.is_null() || has_null_member(x)),
            _ => false,
        }
    }
    (!has_null_member(v)).then(|| v.clone())
}

/// The patch from `old` to `new` as JSON text, when it is smaller than `new`.
pub fn smaller_patch(old: &RawValue, new: &RawValue) -> Option<Box<RawValue>> {
    let o: Value = serde_json::from_str(old.get()).ok()?;
    let n: Value = serde_json::from_str(new.get()).ok()?;
    let patch = merge_patch(&o, &n)?;
    let text = serde_json::to_string(&patch).ok()?;
    if text.len() >= new.get().len() {
        return None;
    }
    RawValue::from_string(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(old: Value, new: Value) -> Option<Value> {
        let patch = merge_patch(&old, &new)?;
        let mut applied = old.clone();
        json_patch::merge(&mut applied, &patch);
        assert_eq!(applied, new, "patch {patch} from {old}");
        Some(patch)
    }

    #[test]
    fn a_changed_field_is_all_the_patch_says() {
        let p = check(
            json!({"sku": "A1", "price": 10, "stock": {"eu": 3, "us": 4}, "tags": [1, 2]}),
            json!({"sku": "A1", "price": 12, "stock": {"eu": 3, "us": 5}, "tags": [1, 2]}),
        );
        assert_eq!(p, Some(json!({"price": 12, "stock": {"us": 5}})));
    }

    #[test]
    fn removed_members_become_null_and_arrays_are_replaced() {
        let p = check(
            json!({"a": 1, "b": {"c": 2, "d": 3}, "list": [1, 2, 3]}),
            json!({"b": {"c": 2}, "list": [1], "e": {"f": [null]}}),
        );
        assert_eq!(
            p,
            Some(json!({"a": null, "b": {"d": null}, "list": [1], "e": {"f": [null]}}))
        );
        assert_eq!(check(json!({"a": 1}), json!({"a": 1})), Some(json!({})));
    }

    #[test]
    fn what_a_merge_patch_cannot_say_gets_no_patch() {
        assert_eq!(check(json!({"a": 1}), json!({"a": null})), None);
        assert_eq!(check(json!({}), json!({"a": null})), None);
        assert_eq!(check(json!({"a": 1}), json!({"a": {"b": null}})), None);
        assert_eq!(
            check(json!({"a": {"x": 1}}), json!({"a": {"x": null}})),
            None
        );
        assert_eq!(check(json!([1]), json!([2])), None);
        assert_eq!(check(json!(1), json!({"a": 1})), None);
        assert_eq!(check(json!({"a": 1}), json!("text")), None);
    }

    #[test]
    fn the_patch_is_sent_only_when_smaller() {
        let raw = |v: Value| RawValue::from_string(v.to_string()).expect("json");
        let big = json!({"name": "x".repeat(2000), "price": 10});
        let mut changed = big.clone();
        changed["price"] = json!(11);
        let p = smaller_patch(&raw(big), &raw(changed)).expect("a patch");
        assert_eq!(p.get(), r#"{"price":11}"#);
        assert!(smaller_patch(&raw(json!({"a": 1})), &raw(json!({"b": 2}))).is_none());
    }
}
