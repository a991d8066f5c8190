//! The JSONPatch (RFC 6902) from one JSON value to another, as an admission webhook
//! answers: maps are compared key by key; a list that gained items at its start or
//! its end gets `add`s (so a patch adding the sidecar does not rewrite the app's
//! containers), a list of the same length is compared item by item, any other
//! changed list is replaced whole. Hand-written: the one crate for it (`json-patch`)
//! brings its own JSON-pointer and diff machinery for these forty lines.

use serde_json::{json, Value};

/// The operations turning `from` into `to` (empty when they are equal).
pub fn diff(from: &Value, to: &Value) -> Vec<Value> {
    let mut ops = Vec::new();
    walk(from, to, &mut String::new(), &mut ops);
    ops
}

/// `~` and `/` escaped as RFC 6901 says.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn walk(from: &Value, to: &Value, path: &mut String, ops: &mut Vec<Value>) {
    if from == to {
        return;
    }
    match (from, to) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, va) in a {
                let mut p = format!("{path}/{}", escape(k));
                match b.get(k) {
                    Some(vb) => walk(va, vb, &mut p, ops),
                    None => ops.push(json!({"op": "remove", "path": p})),
                }
            }
            for (k, vb) in b {
                if !a.contains_key(k) {
                    ops.push(
                        json!({"op": "add", "path": format!("{path}/{}", escape(k)), "value": vb}),
                    );
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (va, vb)) in a.iter().zip(b).enumerate() {
                walk(va, vb, &mut format!("{path}/{i}"), ops);
            }
        }
        (Value::Array(a), Value::Array(b)) if b.len() > a.len() && b.ends_with(a) => {
            let added = b.len().saturating_sub(a.len());
            for (i, v) in b.iter().take(added).enumerate() {
                ops.push(json!({"op": "add", "path": format!("{path}/{i}"), "value": v}));
            }
        }
        (Value::Array(a), Value::Array(b)) if b.len() > a.len() && b.starts_with(a) => {
            for v in b.iter().skip(a.len()) {
                ops.push(json!({"op": "add", "path": format!("{path}/-"), "value": v}));
            }
        }
        _ => ops.push(json!({"op": "replace", "path": path.clone(), "value": to})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain applier of the operations `diff` emits, to check the round trip.
    fn apply(mut doc: Value, ops: &[Value]) -> Value {
        for op in ops {
            let path = op["path"].as_str().unwrap();
            let (parent, last) = path.rsplit_once('/').unwrap();
            let last = last.replace("~1", "/").replace("~0", "~");
            let target = doc.pointer_mut(parent).unwrap();
            match (op["op"].as_str().unwrap(), target) {
                ("add", Value::Array(a)) if last == "-" => a.push(op["value"].clone()),
                ("add", Value::Array(a)) => a.insert(last.parse().unwrap(), op["value"].clone()),
                ("add" | "replace", Value::Object(m)) => {
                    m.insert(last, op["value"].clone());
                }
                ("replace", Value::Array(a)) => {
                    a[last.parse::<usize>().unwrap()] = op["value"].clone()
                }
                ("remove", Value::Object(m)) => {
                    m.remove(&last);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        doc
    }

    #[test]
    fn round_trips() {
        let from =
            json!({"a": {"x/y": 1, "gone": 2}, "l": [1, 2], "m": [1, 2], "r": [1, 2, 3], "s": "t"});
        let to =
            json!({"a": {"x/y": 2, "new~": 3}, "l": [0, 1, 2], "m": [1, 2, 3], "r": [3], "s": "t"});
        let ops = diff(&from, &to);
        assert_eq!(apply(from.clone(), &ops), to);
        assert!(ops.iter().any(|o| o["path"] == "/a/x~1y"));
        assert!(ops.iter().any(|o| o["path"] == "/l/0" && o["op"] == "add"));
        assert!(ops.iter().any(|o| o["path"] == "/m/-"));
        assert!(ops
            .iter()
            .any(|o| o["path"] == "/r" && o["op"] == "replace"));
        assert!(diff(&to, &to).is_empty());
    }
}
