//! Webhook URLs as the gateway's group names, for `{n:webhook}` templates and the webhook
//! flows.

/// How a webhook URL becomes a group name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookStyle {
    /// `webhook-{host '.'→'-'}-{path '/'→'-'}` (current gateway).
    Hyphen,
    /// `webhook_{host '.'→'_'}_{path '/'→'_'}` (older gateway).
    Underscore,
}

/// The gateway's group name for a webhook URL. Port, query and fragment are ignored; the
/// host is lower-cased. `None` when the text is not an absolute URL with a host.
pub fn webhook_group(url: &str, style: WebhookStyle) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(stripped) = host_port.strip_prefix('[') {
        stripped.split_once(']').map(|(h, _)| h)?
    } else {
        host_port.split_once(':').map_or(host_port, |(h, _)| h)
    };
    if host.is_empty() {
        return None;
    }
    let after = &rest[end..];
    let path_end = after.find(['?', '#']).unwrap_or(after.len());
    let path = if after[..path_end].is_empty() {
        "/"
    } else {
        &after[..path_end]
    };
    let host = host.to_ascii_lowercase();
    Some(match style {
        WebhookStyle::Hyphen => format!(
            "webhook-{}-{}",
            host.replace('.', "-"),
            path.replace('/', "-")
        ),
        WebhookStyle::Underscore => {
            format!(
                "webhook_{}_{}",
                host.replace('.', "_"),
                path.replace('/', "_")
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_become_the_gateways_group_names() {
        assert_eq!(
            webhook_group("https://api.example.com/hooks/x", WebhookStyle::Hyphen).as_deref(),
            Some("webhook-api-example-com--hooks-x")
        );
        assert_eq!(
            webhook_group(
                "https://API.Example.com:8443/hooks/x?sig=1#f",
                WebhookStyle::Underscore
            )
            .as_deref(),
            Some("webhook_api_example_com__hooks_x")
        );
        assert_eq!(
            webhook_group("http://user:pw@h.io", WebhookStyle::Hyphen).as_deref(),
            Some("webhook-h-io--")
        );
        assert_eq!(webhook_group("not a url", WebhookStyle::Hyphen), None);
    }
}
