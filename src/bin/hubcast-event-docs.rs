//! Writes `docs/events.md` from the event contracts:
//! `cargo run --bin hubcast-event-docs > docs/events.md`.

fn main() {
    print!("{}", hubcast::events::render_markdown());
}
