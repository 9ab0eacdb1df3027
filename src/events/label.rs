//! The `target` label of the event metrics: a closed set per hub.
//!
//! Publishers name targets freely, and every distinct label value is a series the
//! exporter keeps for the life of the process: 20 000 made-up targets grew `/metrics` from
//! 10 KB to 5.3 MB, for good. So a target is its own label only when the hub declares it,
//! and `other` otherwise.

use std::borrow::Cow;

use super::registry::contract;
use crate::hub::Hub;

/// The label of every target its hub does not declare.
pub const OTHER_TARGET: &str = "other";

/// The `target` label of an event sent on `hub`: the target itself when the hub declares
/// it — one of the hub's event contracts (which include every event the flows send), or
/// an event one of its methods replies with (`Error` for a method that answers with a
/// soft error) — and [`OTHER_TARGET`] for anything else.
pub fn target_label(hub: &Hub, target: &str) -> Cow<'static, str> {
    if let Some(c) = contract(hub.name(), target) {
        return Cow::Borrowed(c.target);
    }
    let replied =
        hub.spec.methods.iter().any(|m| {
            m.reply.as_deref() == Some(target) || (m.error.is_some() && target == "Error")
        });
    if replied {
        Cow::Owned(target.to_owned())
    } else {
        Cow::Borrowed(OTHER_TARGET)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::default_hubs;

    fn hub(name: &str) -> Hub {
        let spec = default_hubs().into_iter().find(|h| h.name == name).unwrap();
        Hub::new(spec).unwrap()
    }

    #[test]
    fn declared_targets_keep_their_name_and_the_rest_is_other() {
        let spend = hub("spend");
        assert_eq!(target_label(&spend, "SpendUpdate"), "SpendUpdate");
        assert_eq!(target_label(&spend, "BudgetAlert"), "BudgetAlert");
        // Declared on another hub only: not this hub's.
        assert_eq!(target_label(&spend, "HighSpendAlert"), OTHER_TARGET);
        assert_eq!(target_label(&spend, "spendupdate"), OTHER_TARGET);
        let webhooks = hub("webhooks");
        assert_eq!(
            target_label(&webhooks, "CircuitBreakerStateChanged"),
            "CircuitBreakerStateChanged"
        );
        assert_eq!(
            target_label(&webhooks, "StatisticsRequested"),
            "StatisticsRequested",
            "a method's reply"
        );
        let admin = hub("admin-notifications");
        assert_eq!(
            target_label(&admin, "SubscribedToVirtualKey"),
            "SubscribedToVirtualKey"
        );
        assert_eq!(target_label(&admin, "Error"), "Error", "the soft error");
        assert_eq!(
            target_label(&admin, "ProviderHealthUpdate"),
            "ProviderHealthUpdate"
        );
    }

    #[test]
    fn any_number_of_made_up_targets_gives_one_label_per_declared_event_and_other() {
        let mut labels = std::collections::BTreeSet::new();
        for h in default_hubs() {
            let h = Hub::new(h).unwrap();
            for i in 0..2_000 {
                labels.insert((h.name().to_owned(), target_label(&h, &format!("Made{i}"))));
            }
        }
        assert_eq!(labels.len(), default_hubs().len(), "one `other` per hub");
        assert!(labels.iter().all(|(_, l)| l == OTHER_TARGET));
    }
}
