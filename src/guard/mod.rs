//! The publish guards, below both the node (which owns them) and the flows (which feed
//! them), so neither has to import the other for them: progress coalescing and the
//! storm-protection suppression records.

mod coalesce;
mod storm;

pub use coalesce::Coalescer;
pub(crate) use coalesce::{PlannedEvent, ProgressStep};
pub use storm::Suppressions;
