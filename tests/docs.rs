//! The generated documents must match the code they describe.

#[test]
fn docs_events_md_is_up_to_date() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/events.md");
    let on_disk = std::fs::read_to_string(path).unwrap_or_default();
    let generated = hubcast::events::render_markdown();
    assert!(
        on_disk == generated,
        "docs/events.md is stale: run `cargo run --bin hubcast-event-docs > docs/events.md`"
    );
}
