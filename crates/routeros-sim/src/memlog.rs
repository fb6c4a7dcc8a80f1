//! The memory log behind `/log`: a ring of the newest entries, as RouterOS's default `memory`
//! logging action keeps them (MikroTik manual, "Log": entries have a time, topics and a message;
//! the default rules keep `info`, `error` and `warning` in the `memory` action, newest 1000
//! entries, RAM only, lost at reboot).
//!
//! The sim writes its own API events here (login failures, logins, logouts; see
//! `cmd::login`), and tests add any line with [`Sim::log`](crate::Sim::log) to play ssh, winbox
//! or firewall events.

use std::collections::VecDeque;
use std::fmt::Display;
use std::time::{Duration, SystemTime};

/// A log entry as the inspection API shows it ([`Sim::logs`](crate::Sim::logs)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// `.id`, e.g. `*1F`. Increasing, never reused.
    pub id: String,
    /// When it was logged (sim clock mapped to wall time).
    pub time: SystemTime,
    /// Comma-separated topics, e.g. `system,error,critical`.
    pub topics: String,
    /// The message, e.g. `login failure for user admin from 192.0.2.7 via ssh`.
    pub message: String,
    /// `extra-info` (7.19+), e.g. `app=ssh duser=admin outcome=failure src=192.0.2.7`.
    pub extra_info: Option<String>,
}

/// A log entry to add with [`Sim::push_log`](crate::Sim::push_log).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewLogEntry {
    /// Comma-separated topics, e.g. `system,error,critical`.
    pub topics: String,
    /// The message.
    pub message: String,
    /// `extra-info`, shown on 7.19+ only.
    pub extra_info: Option<String>,
}

impl NewLogEntry {
    /// An entry with these topics and message.
    pub fn new(topics: &str, message: &str) -> Self {
        Self {
            topics: topics.to_owned(),
            message: message.to_owned(),
            extra_info: None,
        }
    }

    /// Adds `extra-info`.
    pub fn with_extra_info(mut self, extra_info: &str) -> Self {
        self.extra_info = Some(extra_info.to_owned());
        self
    }

    /// `login failure for user <user> from <address> via <service>`, topics
    /// `system,error,critical`, and the 7.19+ `extra-info`
    /// `app=<service> duser=<user> outcome=failure src=<address>` (lines: fail2ban
    /// `fail2ban/tests/files/logs/routeros-auth`, CrowdSec hub `.tests/mikrotik-bf`; extra fields:
    /// the CEF example of the MikroTik manual, "Log").
    pub fn login_failure(user: &str, address: impl Display, via: &str) -> Self {
        let address = address.to_string();
        Self::new(
            "system,error,critical",
            &format!("login failure for user {user} from {address} via {via}"),
        )
        .with_extra_info(&format!(
            "app={via} duser={user} outcome=failure src={address}"
        ))
    }

    /// `user <user> logged in from <address> via <service>`, topics `system,info,account`
    /// (MikroTik manual, "Log" example; a recorded API row: `'message': 'user admin logged in
    /// from 192.168.0.250 via api'`, `'extra-info': 'app=api duser=apiuser outcome=success
    /// src=192.168.1.47'`).
    pub fn logged_in(user: &str, address: impl Display, via: &str) -> Self {
        let address = address.to_string();
        Self::new(
            "system,info,account",
            &format!("user {user} logged in from {address} via {via}"),
        )
        .with_extra_info(&format!(
            "app={via} duser={user} outcome=success src={address}"
        ))
    }

    /// `user <user> logged out from <address> via <service>`, topics `system,info,account`
    /// (MikroTik manual, "Log" example). No recorded row shows an `extra-info` for a logout:
    /// none is set.
    pub fn logged_out(user: &str, address: impl Display, via: &str) -> Self {
        Self::new(
            "system,info,account",
            &format!("user {user} logged out from {address} via {via}"),
        )
    }
}

/// One stored entry.
#[derive(Debug, Clone)]
pub(crate) struct StoredLog {
    pub id: u64,
    /// Sim time.
    pub at: Duration,
    pub topics: String,
    pub message: String,
    pub extra_info: Option<String>,
}

/// The newest `capacity` entries, oldest first.
#[derive(Debug)]
pub(crate) struct LogBuffer {
    entries: VecDeque<StoredLog>,
    capacity: usize,
    next_id: u64,
}

impl LogBuffer {
    /// `/system/logging/action` `memory-lines` takes 1..65535.
    pub(crate) const MAX_LINES: usize = 65_535;

    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, Self::MAX_LINES);
        Self {
            entries: VecDeque::with_capacity(capacity.min(1024)),
            capacity,
            next_id: 1,
        }
    }

    /// Appends an entry, dropping the oldest past the capacity. Returns its id.
    pub(crate) fn push(&mut self, at: Duration, entry: NewLogEntry) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        while self.entries.len() >= self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(StoredLog {
            id,
            at,
            topics: entry.topics,
            message: entry.message,
            extra_info: entry.extra_info,
        });
        id
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &StoredLog> {
        self.entries.iter()
    }

    /// Entries with an id above `id`, oldest first.
    pub(crate) fn after(&self, id: u64) -> impl Iterator<Item = &StoredLog> {
        // Ids increase along the ring: skip the prefix at or below `id`.
        let start = self.entries.partition_point(|e| e.id <= id);
        self.entries.range(start..)
    }

    /// The id of the newest entry ever logged (0 before the first).
    pub(crate) fn last_id(&self) -> u64 {
        self.next_id - 1
    }

    /// A reboot empties the memory log (RAM only); ids keep counting.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    #[test]
    fn keeps_the_newest_capacity_entries() {
        let mut b = LogBuffer::new(3);
        for i in 0..5 {
            b.push(
                Duration::from_secs(i),
                NewLogEntry::new("t", &i.to_string()),
            );
        }
        let msgs: Vec<&str> = b.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(msgs, ["2", "3", "4"]);
        let ids: Vec<u64> = b.after(3).map(|e| e.id).collect();
        assert_eq!(ids, [4, 5]);
        assert_eq!(b.after(0).count(), 3);
        assert_eq!(b.last_id(), 5);
        b.clear();
        assert_eq!(b.iter().count(), 0);
        assert_eq!(b.push(Duration::ZERO, NewLogEntry::new("t", "x")), 6);
    }

    #[test]
    fn capacity_is_clamped_to_the_routeros_range() {
        assert_eq!(LogBuffer::new(0).capacity, 1);
        assert_eq!(LogBuffer::new(usize::MAX).capacity, LogBuffer::MAX_LINES);
    }

    #[test]
    fn login_lines_match_the_recorded_forms() {
        let a: IpAddr = "192.0.2.7".parse().unwrap();
        let f = NewLogEntry::login_failure("admin", a, "api");
        assert_eq!(f.topics, "system,error,critical");
        assert_eq!(
            f.message,
            "login failure for user admin from 192.0.2.7 via api"
        );
        assert_eq!(
            f.extra_info.as_deref(),
            Some("app=api duser=admin outcome=failure src=192.0.2.7")
        );
        // An empty user name leaves two spaces (fail2ban `routeros-auth` sample).
        assert_eq!(
            NewLogEntry::login_failure("", a, "ssh").message,
            "login failure for user  from 192.0.2.7 via ssh"
        );
        assert_eq!(
            NewLogEntry::logged_out("admin", a, "api").message,
            "user admin logged out from 192.0.2.7 via api"
        );
    }
}
