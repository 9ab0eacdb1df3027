//! The per-user connection limit on one node: a slot is taken at the upgrade and held by
//! the session until it ends, so the count is right however the session ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Counts each user's connections on this node against a limit.
#[derive(Debug)]
pub struct UserSlots {
    limit: usize,
    users: Arc<Mutex<HashMap<String, usize>>>,
}

/// Holds one of a user's connection slots on this node; released when dropped.
#[derive(Debug)]
pub struct UserSlot {
    users: Arc<Mutex<HashMap<String, usize>>>,
    user: String,
}

impl UserSlots {
    /// At most `limit` connections per user.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            users: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// One of `user`'s slots; `None` when the user holds the most allowed.
    pub fn take(&self, user: &str) -> Option<UserSlot> {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let n = users.entry(user.to_owned()).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(UserSlot {
            users: self.users.clone(),
            user: user.to_owned(),
        })
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = users.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                users.remove(&self.user);
            }
        }
    }
}
