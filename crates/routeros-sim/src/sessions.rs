//! Who is logged in: the table behind `/user/active`.
//!
//! Every API login of the sim adds a row (`via=api`) that its connection's end removes; tests
//! add rows for other services with [`Sim::add_active_session`](crate::Sim::add_active_session)
//! (an admin on winbox, a script on ssh). Rows have `.id`, `when`, `name`, `address`, `via`,
//! `group`, `radius` (MikroTik manual 2.6, "Users": `/user active print` shows `when`, `name`,
//! `address`, `via`; `group` and `radius` are the later properties, order after them
//! **unverified**).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// A row of `/user/active` as the inspection API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveSession {
    /// `.id`, e.g. `*3`.
    pub id: String,
    /// Login time (sim clock mapped to wall time).
    pub when: SystemTime,
    /// User name.
    pub name: String,
    /// Where the user came from, as printed (an IP address, or a MAC for MAC-winbox).
    pub address: String,
    /// Service: `api`, `winbox`, `ssh`, `web`, `telnet`, `ftp`, `console`, ...
    pub via: String,
    /// The user's group.
    pub group: String,
    /// Authenticated by RADIUS.
    pub radius: bool,
}

/// A session to add with [`Sim::push_active_session`](crate::Sim::push_active_session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewActiveSession {
    /// User name.
    pub name: String,
    /// Address as printed.
    pub address: String,
    /// Service (`winbox`, `ssh`, ...).
    pub via: String,
    /// Group; `full` unless set.
    pub group: String,
    /// Authenticated by RADIUS; `false` unless set.
    pub radius: bool,
}

impl NewActiveSession {
    /// A session of `name` from `address` over `via`, group `full`.
    pub fn new(name: &str, address: &str, via: &str) -> Self {
        Self {
            name: name.to_owned(),
            address: address.to_owned(),
            via: via.to_owned(),
            group: "full".to_owned(),
            radius: false,
        }
    }

    /// Sets the group.
    pub fn with_group(mut self, group: &str) -> Self {
        self.group = group.to_owned();
        self
    }
}

#[derive(Debug, Clone)]
pub(crate) struct StoredSession {
    pub id: u64,
    /// Sim time of the login.
    pub at: Duration,
    pub session: NewActiveSession,
}

/// The rows, in id order.
#[derive(Debug, Default)]
pub(crate) struct ActiveSessions {
    rows: BTreeMap<u64, StoredSession>,
    next_id: u64,
}

impl ActiveSessions {
    /// Rows the table holds at most. API sessions are bounded by `max-sessions` (≤ 1000, §5);
    /// this bounds what tests add.
    pub(crate) const MAX: usize = 4096;

    /// Adds a row; `None` when the table is full.
    pub(crate) fn add(&mut self, at: Duration, session: NewActiveSession) -> Option<u64> {
        if self.rows.len() >= Self::MAX {
            return None;
        }
        self.next_id += 1;
        let id = self.next_id;
        self.rows.insert(id, StoredSession { id, at, session });
        Some(id)
    }

    pub(crate) fn remove(&mut self, id: u64) -> Option<StoredSession> {
        self.rows.remove(&id)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &StoredSession> {
        self.rows.values()
    }

    /// A reboot ends every session; ids keep counting.
    pub(crate) fn clear(&mut self) {
        self.rows.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_bounded_and_ids_never_reused() {
        let mut t = ActiveSessions::default();
        let a = t.add(
            Duration::ZERO,
            NewActiveSession::new("a", "192.0.2.1", "winbox"),
        );
        assert_eq!(a, Some(1));
        assert!(t.remove(1).is_some());
        assert!(t.remove(1).is_none());
        for _ in 0..ActiveSessions::MAX {
            assert!(
                t.add(Duration::ZERO, NewActiveSession::new("x", "", "ssh"))
                    .is_some()
            );
        }
        assert_eq!(
            t.add(Duration::ZERO, NewActiveSession::new("y", "", "ssh")),
            None
        );
        t.clear();
        assert_eq!(
            t.add(Duration::ZERO, NewActiveSession::new("z", "", "ssh")),
            Some(ActiveSessions::MAX as u64 + 2)
        );
    }
}
