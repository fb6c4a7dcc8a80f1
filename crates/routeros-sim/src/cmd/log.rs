//! `/log/print`: the memory log ([`crate::memlog`]).
//!
//! Rows carry `.id`, `time`, `topics`, `message` in that order (recorded API rows:
//! `{'.id': '*2000', 'time': '2025-06-16 08:30:46', 'topics': 'system,info,account', 'message':
//! 'user admin logged in from 192.168.0.250 via api'}`, dev-drizzithiago/ProjetoAutomacao
//! `mikrotik_monitoramento/mikrotik_logs.py`), then `extra-info` on 7.19+ when the entry has one
//! (a recorded 7.19+ row lists it after `message`), then `buffer` (`memory`) on 7.21+ (see
//! [`Version::log_buffer_field`](crate::config::Version)). `time` follows
//! [`LogTimeFormat`](crate::LogTimeFormat).
//!
//! `print` takes the options every print takes (§6: `.proplist`, queries, `count-only`,
//! `follow`, `follow-only`, and the console display flags, which change nothing on the API) and,
//! from 7.19, `with-extra-info` (RouterOS command schemas 7.15.3-7.24: `/log/print` has
//! `follow-only` and `proplist` in every version, `with-extra-info` from 7.19). Over the API
//! `extra-info` is a property of the row, so the flag changes nothing here either.
//!
//! `follow-only` streams new entries and never ends until `/cancel`; `follow` sends the current
//! entries first. Entries that fall out of the ring are not reported.

use routeros_proto::{Request, category};

use super::print::{PrintOpts, Source, Stream, one_shot};
use super::{Outcome, PRINT_PARAMS, Replier, Trap};
use crate::config::LogTimeFormat;
use crate::memlog::StoredLog;
use crate::query::Props;
use crate::shared::Shared;
use crate::timefmt::{self, DateStyle};

pub(crate) fn run(
    shared: &Shared,
    verb: &str,
    req: &Request,
    r: &Replier,
) -> Result<Outcome, Trap> {
    match verb {
        "print" | "getall" => print(shared, req, r),
        _ => Err(Trap::new(Some(category::MISSING_ITEM), "no such command")),
    }
}

fn print(shared: &Shared, req: &Request, r: &Replier) -> Result<Outcome, Trap> {
    let mut allowed = PRINT_PARAMS.to_vec();
    if shared.version.log_extra_info() {
        allowed.push("with-extra-info");
    }
    let opts = PrintOpts::parse_with(req, &allowed)?;
    if opts.follow || opts.follow_only {
        let snapshot = !opts.follow_only;
        let (stream, first) = Stream::start(shared, Source::Log, opts, r.clone(), snapshot);
        return Ok(Outcome::Follow(stream, first));
    }
    let items: Vec<Props> = rows(shared, 0).into_iter().map(|(_, p)| p).collect();
    Ok(Outcome::Reply(one_shot(shared, &opts, &items, r)))
}

/// Entries with an id above `after`, oldest first, as print rows.
pub(crate) fn rows(shared: &Shared, after: u64) -> Vec<(u64, Props)> {
    let now = shared.clock.now();
    shared.with_state(|s| {
        s.log
            .after(after)
            .map(|e| (e.id, props(shared, e, now)))
            .collect()
    })
}

fn props(shared: &Shared, e: &StoredLog, now: std::time::Duration) -> Props {
    let version = shared.version;
    let style = version.date_style();
    let relative = match shared.config.log_time {
        LogTimeFormat::Auto => style == DateStyle::Legacy,
        LogTimeFormat::Absolute => false,
        LogTimeFormat::Relative => true,
    };
    let at = shared.clock.wall(e.at);
    let time = if relative {
        timefmt::format_relative(at, shared.clock.wall(now), style)
    } else {
        timefmt::format_date_time(at, style)
    };
    let mut p: Props = vec![
        (".id".into(), crate::state::format_id(e.id)),
        ("time".into(), time),
        ("topics".into(), e.topics.clone()),
        ("message".into(), e.message.clone()),
    ];
    if version.log_extra_info()
        && let Some(x) = &e.extra_info
    {
        p.push(("extra-info".into(), x.clone()));
    }
    if version.log_buffer_field() {
        p.push(("buffer".into(), "memory".into()));
    }
    p
}
