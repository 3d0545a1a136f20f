//! The parts of the OpenAPI document the derives cannot state: bounds that come from the
//! server's configuration, and rules that span fields. Applied to the finished document
//! as JSON, so the served `/openapi.json` and the committed snapshot go through the same
//! code ([`finish`]).

use serde_json::{json, Value};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::RefOr;

use crate::limits::Limits;

fn binary(min_length: Option<usize>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
        .min_length(min_length)
        .into()
}

/// A raw request or response body: any bytes.
pub struct Binary;

impl utoipa::PartialSchema for Binary {
    fn schema() -> RefOr<Schema> {
        binary(None)
    }
}

impl utoipa::ToSchema for Binary {}

/// A raw body of at least one byte.
pub struct NonEmptyBinary;

impl utoipa::PartialSchema for NonEmptyBinary {
    fn schema() -> RefOr<Schema> {
        binary(Some(1))
    }
}

impl utoipa::ToSchema for NonEmptyBinary {}

/// A configurable bound of one schema property.
#[derive(Clone, Copy)]
enum Bound {
    Vcpus,
    MemoryMib,
    TtlS,
    TimeoutMs,
    TimeoutS,
}

impl Bound {
    fn max(self, l: &Limits) -> u64 {
        match self {
            Bound::Vcpus => l.max_vcpus.into(),
            Bound::MemoryMib => l.max_memory_mib.into(),
            Bound::TtlS => l.max_ttl_s,
            Bound::TimeoutMs => l.max_timeout_ms,
            Bound::TimeoutS => l.max_timeout_s(),
        }
    }
}

/// Every property whose maximum is a server limit: (schema, property, bound).
const BOUNDS: &[(&str, &str, Bound)] = &[
    ("CreateVm", "vcpus", Bound::Vcpus),
    ("CreateVm", "memory_mib", Bound::MemoryMib),
    ("CreateVm", "ttl_s", Bound::TtlS),
    ("CreateVm", "idle_timeout_s", Bound::TtlS),
    ("CreateJob", "vcpus", Bound::Vcpus),
    ("CreateJob", "memory_mib", Bound::MemoryMib),
    ("CreateJob", "timeout_s", Bound::TimeoutS),
    ("JobParams", "vcpus", Bound::Vcpus),
    ("JobParams", "memory_mib", Bound::MemoryMib),
    ("JobParams", "timeout_s", Bound::TimeoutS),
    ("ExecRequest", "timeout_ms", Bound::TimeoutMs),
    ("RunRequest", "timeout_ms", Bound::TimeoutMs),
    ("ProcessStartRequest", "timeout_ms", Bound::TimeoutMs),
];

fn schema_mut<'a>(doc: &'a mut Value, name: &str) -> Option<&'a mut Value> {
    doc.pointer_mut(&format!("/components/schemas/{name}"))
}

/// Completes a document generated from the derives: limits, then cross-field rules.
pub fn finish(doc: &mut Value, limits: &Limits) {
    apply_limits(doc, limits);
    apply_rules(doc, limits);
}

/// Writes this server's limits into the schemas, so a generated client knows them.
pub fn apply_limits(doc: &mut Value, l: &Limits) {
    for (schema, prop, bound) in BOUNDS {
        let path = format!("/components/schemas/{schema}/properties/{prop}");
        if let Some(Value::Object(p)) = doc.pointer_mut(&path) {
            p.insert("maximum".into(), json!(bound.max(l)));
        }
    }
}

/// Rules between fields: `run-*` takes exactly one of `code` and `path`; an allowlist
/// needs `outbound: true`; a server without VM networking takes neither; a server that
/// builds no images takes only a `name` in `POST /v1/images`.
pub fn apply_rules(doc: &mut Value, l: &Limits) {
    if !l.image_builds {
        if let Some(Value::Object(props)) =
            schema_mut(doc, "CreateImage").and_then(|c| c.get_mut("properties"))
        {
            for f in ["packages", "script", "from"] {
                props.remove(f);
            }
        }
    }
    if let Some(Value::Object(run)) = schema_mut(doc, "RunRequest") {
        let given = |f: &str| json!({"properties": {f: {"type": "string"}}, "required": [f]});
        run.insert("oneOf".into(), json!([given("code"), given("path")]));
    }
    if let Some(Value::Object(net)) = schema_mut(doc, "NetworkSpec") {
        if l.networking {
            net.insert(
                "anyOf".into(),
                json!([
                    {"properties": {"outbound": {"const": true}}, "required": ["outbound"]},
                    {"properties": {"allow": {"maxItems": 0}}}
                ]),
            );
        } else if let Some(Value::Object(props)) = net.get_mut("properties") {
            let desc = "This server gives VMs no network: only `false`.";
            props.insert(
                "outbound".into(),
                json!({"type": "boolean", "const": false, "description": desc}),
            );
            if let Some(Value::Object(allow)) = props.get_mut("allow") {
                allow.insert("maxItems".into(), json!(0));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        json!({"components": {"schemas": {
            "CreateVm": {"properties": {"vcpus": {"type": ["integer", "null"]}}},
            "NetworkSpec": {"properties": {"outbound": {"type": "boolean"}, "allow": {"type": "array"}}},
            "RunRequest": {"properties": {}}
        }}})
    }

    #[test]
    fn limits_and_rules_land_in_the_schemas() {
        let mut d = doc();
        let l = Limits {
            max_vcpus: 2,
            ..Limits::default()
        };
        finish(&mut d, &l);
        let s = &d["components"]["schemas"];
        assert_eq!(s["CreateVm"]["properties"]["vcpus"]["maximum"], 2);
        assert_eq!(s["RunRequest"]["oneOf"].as_array().unwrap().len(), 2);
        assert!(s["NetworkSpec"]["anyOf"].is_array());

        let mut d = doc();
        let off = Limits {
            networking: false,
            ..Limits::default()
        };
        finish(&mut d, &off);
        let net = &d["components"]["schemas"]["NetworkSpec"];
        assert_eq!(net["properties"]["outbound"]["const"], false);
        assert_eq!(net["properties"]["allow"]["maxItems"], 0);
    }
}
