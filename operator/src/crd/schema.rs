//! Tidies the OpenAPI schemas that schemars and kube-derive generate, so every client reads
//! them as the API server does.
//!
//! What the generator leaves that some validators refuse:
//! - `Option<Enum>`: schemars adds `null` to the enum's values, and kube-derive turns the null
//!   type into `nullable: true`, leaving `enum: [A, B, null]`. The API server accepts that, but
//!   clients that validate against the published schema (kubectl's older client-side
//!   validation, kubeconform, IDE plugins) reject the null member or even the schema itself.
//!   `nullable: true` alone already says that null is allowed.
//! - `anyOf`/`oneOf` whose only purpose is to allow null (`[{...}, {enum: [null]}]`): folded
//!   into the first member with `nullable: true`.
//! - Integer bounds written as floats (`minimum: 1.0` on an `integer`): written as integers,
//!   as controller-gen does; a few validators compare the type of the bound with the field's.
//! - Unsigned formats (`uint32`, `uint64`, ...) that Kubernetes does not know: replaced with
//!   `int32`/`int64` plus `minimum: 0`.

use serde_json::{Map, Value};

/// Tidies `schema` (an `openAPIV3Schema`) in place, recursively.
pub fn tidy(schema: &mut Value) {
    let Some(obj) = schema.as_object_mut() else { return };
    fold_null_alternatives(obj);
    if let Some(Value::Array(values)) = obj.get_mut("enum") {
        let before = values.len();
        values.retain(|v| !v.is_null());
        if values.len() != before {
            obj.insert("nullable".into(), Value::Bool(true));
        }
    }
    if obj.get("type").and_then(Value::as_str) == Some("integer") {
        unsigned_format_to_signed(obj);
        for bound in ["minimum", "maximum"] {
            if let Some(n) = obj.get(bound).and_then(Value::as_f64)
                && n.fract() == 0.0
                && n.abs() < 2f64.powi(53)
            {
                obj.insert(bound.into(), Value::from(n as i64));
            }
        }
    }
    for key in ["properties", "patternProperties", "definitions"] {
        if let Some(Value::Object(children)) = obj.get_mut(key) {
            children.values_mut().for_each(tidy);
        }
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(child) = obj.get_mut(key) {
            tidy(child);
        }
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(Value::Array(members)) = obj.get_mut(key) {
            members.iter_mut().for_each(tidy);
        }
    }
}

/// A member that allows only null: `{enum: [null]}`, `{type: "null"}`, `{nullable: true}`.
fn only_null(member: &Value) -> bool {
    let Some(m) = member.as_object() else { return false };
    let null_enum = m.get("enum").is_some_and(|e| e.as_array().is_some_and(|a| a.iter().all(Value::is_null)));
    let null_type = m.get("type").and_then(Value::as_str) == Some("null");
    let keys_ok = m.keys().all(|k| matches!(k.as_str(), "enum" | "type" | "nullable" | "description"));
    keys_ok && (null_enum || null_type || (m.len() == 1 && m.contains_key("nullable")))
}

fn fold_null_alternatives(obj: &mut Map<String, Value>) {
    for key in ["anyOf", "oneOf"] {
        let Some(Value::Array(members)) = obj.get(key) else { continue };
        if members.len() != 2 || !members.iter().any(only_null) {
            continue;
        }
        let Some(Value::Object(real)) = members.iter().find(|m| !only_null(m)).cloned() else { continue };
        obj.remove(key);
        for (k, v) in real {
            // The outer schema's own keys (its description) win over the member's.
            obj.entry(k).or_insert(v);
        }
        obj.insert("nullable".into(), Value::Bool(true));
    }
}

fn unsigned_format_to_signed(obj: &mut Map<String, Value>) {
    let signed = match obj.get("format").and_then(Value::as_str) {
        Some("uint8" | "uint16") => "int32",
        Some("uint32" | "uint64" | "uint") => "int64",
        _ => return,
    };
    obj.insert("format".into(), Value::from(signed));
    let raise = obj.get("minimum").and_then(Value::as_f64).is_none_or(|m| m < 0.0);
    if raise {
        obj.insert("minimum".into(), Value::from(0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn null_is_removed_from_enums_and_kept_as_nullable() {
        let mut s = json!({"properties": {"phase": {"type": "string", "enum": ["Pending", "Scheduled", null], "nullable": true}}});
        tidy(&mut s);
        assert_eq!(s["properties"]["phase"], json!({"type": "string", "enum": ["Pending", "Scheduled"], "nullable": true}));
    }

    #[test]
    fn an_any_of_that_only_allows_null_is_folded() {
        let mut s = json!({"description": "why", "anyOf": [{"type": "string", "enum": ["A", null]}, {"enum": [null], "nullable": true}]});
        tidy(&mut s);
        assert_eq!(s, json!({"description": "why", "type": "string", "enum": ["A"], "nullable": true}));
    }

    #[test]
    fn a_real_union_is_left_alone() {
        let union = json!({"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": true});
        let mut s = union.clone();
        tidy(&mut s);
        assert_eq!(s, union);
    }

    #[test]
    fn integer_bounds_become_integers_and_number_bounds_stay() {
        let mut s = json!({"properties": {
            "port": {"type": "integer", "format": "int32", "minimum": 1.0, "maximum": 65535.0},
            "ratio": {"type": "number", "minimum": 0.5},
        }});
        tidy(&mut s);
        assert_eq!(s["properties"]["port"]["minimum"], json!(1));
        assert!(s["properties"]["port"]["minimum"].is_i64());
        assert_eq!(s["properties"]["port"]["maximum"], json!(65535));
        assert_eq!(s["properties"]["ratio"]["minimum"], json!(0.5));
    }

    #[test]
    fn unsigned_formats_become_signed_with_a_lower_bound() {
        let mut s = json!({"items": {"type": "integer", "format": "uint32", "minimum": 0.0}});
        tidy(&mut s);
        assert_eq!(s["items"], json!({"type": "integer", "format": "int64", "minimum": 0}));
        let mut s = json!({"type": "integer", "format": "uint16", "minimum": 1024.0});
        tidy(&mut s);
        assert_eq!(s, json!({"type": "integer", "format": "int32", "minimum": 1024}));
    }
}
