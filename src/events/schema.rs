//! The contracts as JSON Schema (served at `GET /api/v1/schemas`) and as the generated
//! `docs/events.md`.

use schemars::SchemaGenerator;
use serde_json::Value;

use super::contract::{Contract, Shape};
use super::registry::CONTRACTS;

impl Contract {
    /// The JSON Schema of the arguments array.
    pub fn arguments_schema(&self, g: &mut SchemaGenerator) -> Value {
        match self.shape {
            Shape::Object(schema, _) => serde_json::json!({
                "type": "array", "minItems": 1, "maxItems": 1, "prefixItems": [schema(g)]
            }),
            Shape::Positional(params) => serde_json::json!({
                "type": "array",
                "minItems": params.iter().filter(|p| p.required).count(),
                "maxItems": params.len(),
                "prefixItems": params.iter().map(|p| {
                    let mut s = serde_json::to_value((p.schema)(g)).unwrap_or(Value::Null);
                    if let Value::Object(o) = &mut s { o.insert("title".into(), p.name.into()); }
                    s
                }).collect::<Vec<_>>(),
            }),
        }
    }
}

/// Every contract's schema, as served at `GET /api/v1/schemas`: one JSON Schema document
/// whose `events` map target names to their hubs, groups and arguments schema, with the
/// DTO definitions under `$defs`.
pub fn schemas() -> Value {
    let mut g = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let events: serde_json::Map<String, Value> = CONTRACTS
        .iter()
        .map(|c| {
            (
                format!("{}@{}", c.target, c.hubs.join(",")),
                serde_json::json!({
                    "target": c.target,
                    "hubs": c.hubs,
                    "groups": c.groups,
                    "description": c.description,
                    "arguments": c.arguments_schema(&mut g),
                }),
            )
        })
        .collect();
    let defs = serde_json::to_value(g.take_definitions(true)).unwrap_or(Value::Null);
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "hubcast event contracts",
        "events": events,
        "$defs": defs,
    })
}

/// `docs/events.md`, generated from the contracts.
pub fn render_markdown() -> String {
    let doc = schemas();
    let mut out = String::from(
        "# Event contracts\n\n\
         Generated from `src/events/` by `cargo run --bin hubcast-event-docs > docs/events.md`;\n\
         a test fails when this file is stale. The same schemas are served at `GET /api/v1/schemas`.\n\n\
         Object events carry `timestamp` (UTC, RFC 3339) and `correlationId`. The tasks hub's\n\
         events keep the gateway's positional arguments.\n\n\
         | event | hubs | groups | meaning |\n|---|---|---|---|\n",
    );
    for c in CONTRACTS {
        out.push_str(&format!(
            "| `{}` | {} | `{}` | {} |\n",
            c.target,
            c.hubs.join(", "),
            c.groups,
            c.description
        ));
    }
    for c in CONTRACTS {
        let key = format!("{}@{}", c.target, c.hubs.join(","));
        out.push_str(&format!(
            "\n## {} ({})\n\n{}\n\n",
            c.target,
            c.hubs.join(", "),
            c.description
        ));
        out.push_str("```json\n");
        out.push_str(
            &serde_json::to_string_pretty(&doc["events"][&key]["arguments"]).unwrap_or_default(),
        );
        out.push_str("\n```\n");
    }
    out.push_str("\n## Definitions\n\n```json\n");
    out.push_str(&serde_json::to_string_pretty(&doc["$defs"]).unwrap_or_default());
    out.push_str("\n```\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_document_describes_every_event() {
        let doc = schemas();
        assert_eq!(doc["events"].as_object().unwrap().len(), CONTRACTS.len());
        let defs = doc["$defs"].as_object().unwrap();
        assert!(defs.contains_key("SpendUpdateNotification"));
        assert!(render_markdown().contains("## CircuitBreakerStateChanged"));
    }
}
