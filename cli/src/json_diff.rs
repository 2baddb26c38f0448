//! What changed between the body the client sent and the body that goes upstream, as
//! JSON-pointer lines. Arrays are aligned on equal elements first, so a prepended system
//! message shows as one addition rather than every message changing.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added(String, Value),
    Removed(String, Value),
    Changed(String, Value, Value),
}

/// Arrays longer than this are compared index by index (alignment is quadratic).
const MAX_ALIGNED_LEN: usize = 256;

pub fn diff(old: &Value, new: &Value) -> Vec<Change> {
    let mut changes = Vec::new();
    walk(String::new(), old, new, &mut changes);
    changes
}

fn walk(path: String, old: &Value, new: &Value, out: &mut Vec<Change>) {
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let child = format!("{path}/{}", escape(key));
                match b.get(key) {
                    Some(other) => walk(child, value, other, out),
                    None => out.push(Change::Removed(child, value.clone())),
                }
            }
            for (key, value) in b {
                if !a.contains_key(key) {
                    out.push(Change::Added(
                        format!("{path}/{}", escape(key)),
                        value.clone(),
                    ));
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => walk_arrays(&path, a, b, out),
        _ => out.push(Change::Changed(path, old.clone(), new.clone())),
    }
}

fn walk_arrays(path: &str, a: &[Value], b: &[Value], out: &mut Vec<Change>) {
    let pairs = if a.len() <= MAX_ALIGNED_LEN && b.len() <= MAX_ALIGNED_LEN {
        align(a, b)
    } else {
        Vec::new()
    };
    // Between two aligned (equal) pairs, elements are paired up as changes; the rest are
    // additions or removals. New-side indexes name positions in the new array.
    let mut i = 0;
    let mut j = 0;
    for (next_i, next_j) in pairs.into_iter().chain(std::iter::once((a.len(), b.len()))) {
        while i < next_i && j < next_j {
            if let (Some(x), Some(y)) = (a.get(i), b.get(j)) {
                walk(format!("{path}/{j}"), x, y, out);
            }
            i += 1;
            j += 1;
        }
        while i < next_i {
            if let Some(x) = a.get(i) {
                out.push(Change::Removed(format!("{path}/{i}"), x.clone()));
            }
            i += 1;
        }
        while j < next_j {
            if let Some(y) = b.get(j) {
                out.push(Change::Added(format!("{path}/{j}"), y.clone()));
            }
            j += 1;
        }
        i = next_i + 1;
        j = next_j + 1;
    }
}

/// Index pairs of a longest common subsequence of equal elements.
fn align(a: &[Value], b: &[Value]) -> Vec<(usize, usize)> {
    let (n, m) = (a.len(), b.len());
    let width = m + 1;
    let mut table = vec![0u32; (n + 1) * width];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            let value = if a.get(i) == b.get(j) {
                table.get((i + 1) * width + j + 1).copied().unwrap_or(0) + 1
            } else {
                let down = table.get((i + 1) * width + j).copied().unwrap_or(0);
                let right = table.get(i * width + j + 1).copied().unwrap_or(0);
                down.max(right)
            };
            if let Some(cell) = table.get_mut(i * width + j) {
                *cell = value;
            }
        }
    }
    let mut pairs = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n && j < m {
        if a.get(i) == b.get(j) {
            pairs.push((i, j));
            i += 1;
            j += 1;
        } else if table.get((i + 1) * width + j) >= table.get(i * width + j + 1) {
            i += 1;
        } else {
            j += 1;
        }
    }
    pairs
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prepended_message_is_one_addition() {
        let old = json!({"messages":[{"role":"user","content":"hi"}],"temperature":1});
        let new = json!({"messages":[{"role":"system","content":"terse"},{"role":"user","content":"hi"}],"temperature":0.2,"max_tokens":5});
        assert_eq!(
            diff(&old, &new),
            vec![
                Change::Added(
                    "/messages/0".into(),
                    json!({"role":"system","content":"terse"})
                ),
                Change::Changed("/temperature".into(), json!(1), json!(0.2)),
                Change::Added("/max_tokens".into(), json!(5)),
            ]
        );
    }

    #[test]
    fn masked_content_is_a_change_in_place() {
        let old = json!({"messages":[{"role":"user","content":"a"},{"role":"user","content":"my ssn 123"}]});
        let new = json!({"messages":[{"role":"user","content":"a"},{"role":"user","content":"my ssn <SSN>"}]});
        assert_eq!(
            diff(&old, &new),
            vec![Change::Changed(
                "/messages/1/content".into(),
                json!("my ssn 123"),
                json!("my ssn <SSN>")
            )]
        );
    }

    #[test]
    fn equal_is_empty_and_keys_are_escaped() {
        assert!(diff(&json!({"a":[1,2]}), &json!({"a":[1,2]})).is_empty());
        assert_eq!(
            diff(&json!({}), &json!({"a/b":1})),
            vec![Change::Added("/a~1b".into(), json!(1))]
        );
        assert_eq!(
            diff(&json!([1, 2, 3]), &json!([1, 3])),
            vec![Change::Removed("/1".into(), json!(2))]
        );
    }
}
