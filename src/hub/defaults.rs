//! The gateway's seven hubs, written as data in the same shape a config file uses.

use super::methods::MethodSpec;
use super::{HubSpec, SchemaCheck};
use crate::auth::AuthMode;

fn method(name: &str) -> MethodSpec {
    MethodSpec {
        name: name.into(),
        args: None,
        join: None,
        leave: None,
        each: false,
        reply: None,
        reply_args: None,
        error: None,
    }
}

// The hub tests build their own specs with this and `hub`.
pub(super) fn join(name: &str, group: &str) -> MethodSpec {
    MethodSpec {
        join: Some(group.into()),
        ..method(name)
    }
}

fn leave(name: &str, group: &str) -> MethodSpec {
    MethodSpec {
        leave: Some(group.into()),
        ..method(name)
    }
}

pub(super) fn hub(name: &str, methods: Vec<MethodSpec>) -> HubSpec {
    HubSpec {
        name: name.into(),
        path: format!("/hubs/{name}"),
        aliases: Vec::new(),
        allow_broadcast: false,
        auto_join: Vec::new(),
        schema_check: SchemaCheck::Warn,
        auth: AuthMode::Token,
        allow: Vec::new(),
        methods,
        history: true,
    }
}

/// The gateway's seven hubs at their real paths, with the client methods its clients call
/// (see the hub table in the project docs). Server-side "send" helpers that the gateway
/// leaked as invocable methods are deliberately absent.
pub fn default_hubs() -> Vec<HubSpec> {
    let task_methods = |prefix: &str| {
        vec![
            join("SubscribeToTask", &format!("{prefix}-{{0}}")),
            leave("UnsubscribeFromTask", &format!("{prefix}-{{0}}")),
        ]
    };
    let mut video = task_methods("video");
    video.push(join("SubscribeToRequest", "video-{0}"));
    video.push(leave("UnsubscribeFromRequest", "video-{0}"));

    let mut tasks = task_methods("task");
    tasks.push(join("SubscribeToTaskType", "vkey-{vkey}-{0}"));
    tasks.push(leave("UnsubscribeFromTaskType", "vkey-{vkey}-{0}"));

    let webhooks = vec![
        MethodSpec {
            each: true,
            ..join("SubscribeToWebhooks", "{0:webhook}")
        },
        MethodSpec {
            each: true,
            ..leave("UnsubscribeFromWebhooks", "{0:webhook}")
        },
        MethodSpec {
            args: Some(0),
            reply: Some("StatisticsRequested".into()),
            reply_args: Some(vec!["{connectionId}".into()]),
            ..method("RequestStatistics")
        },
    ];

    let notifications = vec![MethodSpec {
        args: Some(1),
        reply: Some("PreferencesUpdated".into()),
        ..method("UpdatePreferences")
    }];

    let with_reply = |m: MethodSpec, reply: &str| MethodSpec {
        reply: Some(reply.into()),
        ..m
    };
    let deprecated = |name: &str, args: usize| MethodSpec {
        args: Some(args),
        error: Some(format!("{name} is no longer supported.")),
        ..method(name)
    };
    let admin = vec![
        with_reply(
            join("SubscribeToVirtualKey", "admin-vkey-{0}"),
            "SubscribedToVirtualKey",
        ),
        with_reply(
            leave("UnsubscribeFromVirtualKey", "admin-vkey-{0}"),
            "UnsubscribedFromVirtualKey",
        ),
        with_reply(
            join("SubscribeToProvider", "admin-provider-{0}"),
            "SubscribedToProvider",
        ),
        with_reply(
            leave("UnsubscribeFromProvider", "admin-provider-{0}"),
            "UnsubscribedFromProvider",
        ),
        deprecated("SubscribeToProviderByName", 1),
        deprecated("UnsubscribeFromProviderByName", 1),
        deprecated("RefreshProviderHealth", 0),
    ];

    // Spend is scoped to the connection's own virtual key: it joins vkey-{vkey} on
    // connect and may join nothing else.
    let mut spend = hub("spend", Vec::new());
    spend.aliases.push("/hubs/spend-notifications".into());
    spend.auto_join.push("vkey-{vkey}".into());
    spend.allow.push("vkey-{vkey}".into());
    // Task-type groups of the caller's own key; tasks themselves only when granted.
    let mut tasks_hub = hub("tasks", tasks);
    tasks_hub.allow.push("vkey-{vkey}-*".into());
    let mut notifications_hub = hub("notifications", notifications);
    notifications_hub.auto_join.push("vkey-{vkey}".into());
    notifications_hub
        .allow
        .extend(["vkey-{vkey}".into(), "vkey-{vkey}-*".into()]);
    let mut admin_hub = hub("admin-notifications", admin);
    admin_hub.auth = AuthMode::MasterKey;
    admin_hub.auto_join.push("admin".into());
    admin_hub.allow.extend(["admin".into(), "admin-*".into()]);

    vec![
        spend,
        tasks_hub,
        hub("video-generation", video),
        hub("image-generation", task_methods("image")),
        hub("webhooks", webhooks),
        notifications_hub,
        admin_hub,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Hub;

    #[test]
    fn every_default_hub_is_valid_and_has_join_and_leave() {
        for spec in default_hubs() {
            let hub = Hub::new(spec).unwrap();
            assert!(hub.method("joingroup").is_some());
            assert!(hub.method("LEAVEGROUP").is_some());
        }
    }
}
