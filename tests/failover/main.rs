//! Nodes on highly available Redis (Cluster and Sentinel) while it fails over, moves slots
//! and fans out: what was accepted is delivered once and in order, or counted.

#[path = "../api/helpers.rs"]
#[allow(dead_code)]
mod helpers;
#[path = "../support/redis_ha.rs"]
#[allow(dead_code)]
mod redis_ha;

mod cluster;
mod harness;
mod load;
mod sentinel;
