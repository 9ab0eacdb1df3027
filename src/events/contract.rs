//! What an event contract is, and the check a publish runs against one.

use schemars::{Schema, SchemaGenerator};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// How an event's arguments are laid out.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// One object argument of this type.
    Object(
        fn(&mut SchemaGenerator) -> Schema,
        fn(&Value) -> Result<(), String>,
    ),
    /// Positional arguments: name, schema, checker, required.
    Positional(&'static [Positional]),
}

/// One positional argument.
#[derive(Debug, Clone, Copy)]
pub struct Positional {
    /// Its name in the gateway's signature.
    pub name: &'static str,
    /// Its schema.
    pub schema: fn(&mut SchemaGenerator) -> Schema,
    /// Checks a value.
    pub check: fn(&Value) -> Result<(), String>,
    /// Whether clients need it (trailing optional arguments may be left out).
    pub required: bool,
}

/// An event a hub's clients listen for.
#[derive(Debug, Clone, Copy)]
pub struct Contract {
    /// The event (SignalR target) name.
    pub target: &'static str,
    /// Hubs it is sent on.
    pub hubs: &'static [&'static str],
    /// Groups it goes to.
    pub groups: &'static str,
    /// What it means.
    pub description: &'static str,
    /// Its arguments.
    pub shape: Shape,
}

/// Checks one value as a `T`. Errors name the path inside the value, because the caller
/// only knows which argument it was.
pub(super) fn check<T: DeserializeOwned>(v: &Value) -> Result<(), String> {
    serde_path_to_error::deserialize::<_, T>(v)
        .map(drop)
        .map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                e.into_inner().to_string()
            } else {
                format!("{path}: {}", e.into_inner())
            }
        })
}

impl Contract {
    /// Checks a publish's arguments; the error names the argument and field.
    ///
    /// # Errors
    /// A message such as `arguments[0].totalSpend: invalid type: string "x", expected f64`.
    pub fn check(&self, arguments: &[Value]) -> Result<(), String> {
        match self.shape {
            Shape::Object(_, check) => match arguments {
                [one] => check(one).map_err(|e| format!("arguments[0].{e}")),
                _ => Err(format!(
                    "{} takes exactly one object argument, got {}",
                    self.target,
                    arguments.len()
                )),
            },
            Shape::Positional(params) => {
                let required = params.iter().filter(|p| p.required).count();
                if arguments.len() < required || arguments.len() > params.len() {
                    return Err(format!(
                        "{} takes {} to {} arguments ({}), got {}",
                        self.target,
                        required,
                        params.len(),
                        params.iter().map(|p| p.name).collect::<Vec<_>>().join(", "),
                        arguments.len()
                    ));
                }
                for (i, (p, v)) in params.iter().zip(arguments).enumerate() {
                    (p.check)(v).map_err(|e| format!("arguments[{i}] ({}): {e}", p.name))?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::events::{contract, SpendUpdateNotification};
    use chrono::Utc;
    use serde_json::json;

    #[test]
    fn a_malformed_object_names_the_field() {
        let c = contract("spend", "SpendUpdate").unwrap();
        let e = c.check(&[json!({"timestamp": "2026-01-01T00:00:00Z", "correlationId": "c", "newSpend": 1, "totalSpend": "lots", "budget": null, "budgetPercentage": null, "budgetRemaining": 0, "budgetUtilization": 0, "provider": "p", "model": "m"})]).unwrap_err();
        assert!(e.contains("totalSpend"), "{e}");
        let e = c
            .check(&[json!({"timestamp": "2026-01-01T00:00:00Z"})])
            .unwrap_err();
        assert!(
            e.contains("correlationId") || e.contains("missing field"),
            "{e}"
        );
        assert!(c.check(&[]).unwrap_err().contains("exactly one"));
    }

    #[test]
    fn positional_events_check_arity_and_types() {
        let c = contract("tasks", "TaskProgress").unwrap();
        assert!(c.check(&[json!("t1"), json!(50)]).is_ok());
        assert!(c.check(&[json!("t1"), json!(50), json!("half")]).is_ok());
        let e = c.check(&[json!("t1"), json!("fifty")]).unwrap_err();
        assert!(e.contains("arguments[1] (progress)"), "{e}");
        assert!(c.check(&[json!("t1")]).is_err());
    }

    #[test]
    fn serialized_events_pass_their_own_check() {
        let now = Utc::now();
        let update = SpendUpdateNotification {
            timestamp: now,
            correlation_id: "c".into(),
            new_spend: 1.0,
            total_spend: 2.0,
            budget: Some(4.0),
            budget_percentage: Some(50.0),
            budget_remaining: 2.0,
            budget_utilization: 0.5,
            provider: "p".into(),
            model: "m".into(),
        };
        let v = serde_json::to_value(&update).unwrap();
        assert_eq!(v["budgetPercentage"], 50.0);
        assert!(contract("spend", "SpendUpdate")
            .unwrap()
            .check(&[v])
            .is_ok());
    }
}
