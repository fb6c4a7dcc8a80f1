//! The supervisor's explicit states. Everything `/health` says is derived from these.

use std::time::{Duration, Instant};

use crowdsec_lapi::Value;

use crate::engine::{Family, Tally};

/// Identifies one router job, so a late event of an aborted job is never taken for the current
/// one.
pub type JobId = u64;

/// Where LAPI stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LapiState {
    /// No snapshot applied yet: the desired state is unknown, so the router is never reconciled
    /// (an unknown desired state must not wipe the lists).
    Starting {
        /// The next poll.
        poll: PollState,
    },
    /// A snapshot is applied: the cache is the truth, even while later polls fail.
    Synced {
        /// The next or current poll.
        poll: PollState,
        /// Since when polls fail; `None` while the last one succeeded.
        failing_since: Option<Instant>,
    },
}

impl LapiState {
    /// The poll part of either state.
    pub fn poll(&self) -> &PollState {
        match self {
            LapiState::Starting { poll } | LapiState::Synced { poll, .. } => poll,
        }
    }

    pub(super) fn poll_mut(&mut self) -> &mut PollState {
        match self {
            LapiState::Starting { poll } | LapiState::Synced { poll, .. } => poll,
        }
    }

    /// True once a snapshot has been applied.
    pub fn is_synced(&self) -> bool {
        matches!(self, LapiState::Synced { .. })
    }
}

/// One poll slot: waiting for its time, or running beside the router work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollState {
    /// The next poll starts at this instant.
    Due(Instant),
    /// A poll is running in the LAPI task.
    InFlight {
        /// A `startup=true` snapshot.
        startup: bool,
        /// When it started.
        since: Instant,
        /// Its overall deadline: the LAPI task ends it there at the latest.
        deadline: Instant,
    },
}

/// Where the router connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterState {
    /// No connection; the next attempt at `retry_at`.
    Disconnected {
        /// Next connection attempt.
        retry_at: Instant,
    },
    /// Connecting and logging in.
    Connecting {
        /// The connect job.
        job: JobId,
        /// Connect and login deadline.
        deadline: Instant,
    },
    /// Logged in.
    Connected {
        /// Since when.
        since: Instant,
        /// How far the engine's view of the lists can be trusted.
        view: View,
        /// The router job running now, if any (one at a time).
        job: Option<Job>,
    },
}

/// The engine's view of the router lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    /// Unknown (new connection, lost replies, reboot, a large update): rebuild before writing.
    Stale {
        /// Why, for the reconcile metric and log line.
        reason: &'static str,
    },
    /// Being rebuilt from prints, then written.
    Reconciling(Reconcile),
    /// Equal to the desired state as far as tikban knows: changes are written as they come.
    Fresh,
}

/// A reconcile in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconcile {
    /// Before the first LAPI snapshot (guard's bans only): nothing is removed.
    pub additive: bool,
    /// `startup`, `resync`, `periodic`, `reboot`, `large update`, ….
    pub reason: &'static str,
    /// When it started.
    pub started: Instant,
    /// The step it is at.
    pub phase: Phase,
    /// Writes so far, for the one log line at the end.
    pub tally: Tally,
    /// Values changed in the cache meanwhile: planned again at the end.
    pub dirty: Vec<Value>,
    /// More changed values than [`super::MAX_DIRTY`]: reconcile again at the end instead.
    pub again: bool,
    /// Unwanted owned entries left for the next reconcile (too many removals for one).
    pub deferred: usize,
}

/// The step of a reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Print this family's list (rows stream into the engine).
    Print(Family),
    /// Send the removals, then the missing adds in chunks.
    Write,
}

/// A router job in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Its id.
    pub id: JobId,
    /// What it does.
    pub kind: JobKind,
    /// When it started.
    pub started: Instant,
    /// Past this instant the job is overdue: the connection is dropped and rebuilt.
    pub deadline: Instant,
}

/// Kinds of router jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobKind {
    /// Pipelined writes and lookups.
    Send {
        /// How many ops.
        ops: usize,
    },
    /// A streamed list print.
    Print {
        /// The family.
        family: Family,
        /// Rows received so far (each extends the deadline a little).
        rows: usize,
    },
    /// `/system/resource/print`.
    Resource,
    /// The firewall rule scan.
    Rules,
    /// `/user/active/print`.
    Sessions,
}

impl JobKind {
    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            JobKind::Send { .. } => "write batch",
            JobKind::Print { .. } => "list print",
            JobKind::Resource => "/system/resource print",
            JobKind::Rules => "firewall rule print",
            JobKind::Sessions => "/user/active print",
        }
    }
}

/// At most one warning per interval for a repeated condition; repeats go to debug. RouterOS
/// keeps 1000 log lines, so a condition that holds on every tick must not fill them.
#[derive(Debug, Clone, Default)]
pub(super) struct Throttle {
    last: Option<Instant>,
}

impl Throttle {
    pub(super) fn allow(&mut self, now: Instant, every: Duration) -> bool {
        if self
            .last
            .is_none_or(|t| now.saturating_duration_since(t) >= every)
        {
            self.last = Some(now);
            true
        } else {
            false
        }
    }
}
