//! `/system/resource/print` and `/system/identity/print` (single-item menus without `.id`).

use routeros_proto::{Request, category};

use super::print::{PrintOpts, one_shot};
use super::{Outcome, Replier, Trap};
use crate::query::Props;
use crate::shared::Shared;
use crate::timefmt;

/// The fields and order of a recorded RB5009 on 7.18.2 (networktocode/ntc-templates
/// `tests/mikrotik_routeros/system_resource_print/mikrotik_routeros_system_resource_print_6.raw`),
/// with the API's unit-less values: bytes, MHz and percent as bare numbers (MikroTik manual,
/// "REST API" example: `"cpu-frequency":"1200"`, `"cpu-load":"1"`, `"free-memory":"1503133696"`).
/// `write-sect-*` and `bad-blocks` are that sample's constants; they do not follow the sim's
/// flash writes (see [`crate::Sim::persistent_writes`] for those).
pub(crate) fn resource(
    shared: &Shared,
    verb: &str,
    req: &Request,
    r: &Replier,
) -> Result<Outcome, Trap> {
    if !matches!(verb, "print" | "getall") {
        return Err(Trap::new(Some(category::MISSING_ITEM), "no such command"));
    }
    let opts = PrintOpts::parse(req)?;
    let cfg = &shared.config;
    let uptime = shared.uptime();
    let uptime = if shared.version.v7_durations() {
        timefmt::format_v7(uptime)
    } else {
        timefmt::format_v6(uptime)
    };
    let memory = shared.with_state(|s| s.memory);
    let p = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    let item: Props = vec![
        p("uptime", &uptime),
        p("version", &format!("{} (stable)", cfg.version)),
        p("build-time", "2025-01-01 00:00:00"),
        p("factory-software", "7.0"),
        p("free-memory", &memory.free.to_string()),
        p("total-memory", &memory.total.to_string()),
        p("cpu", "ARM64"),
        p("cpu-count", "4"),
        p("cpu-frequency", "1400"),
        p("cpu-load", "1"),
        p("free-hdd-space", "872415232"),
        p("total-hdd-space", "1073741824"),
        p("write-sect-since-reboot", "40"),
        p("write-sect-total", "315102"),
        p("bad-blocks", "0"),
        p("architecture-name", &cfg.architecture),
        p("board-name", &cfg.board_name),
        p("platform", "MikroTik"),
    ];
    Ok(Outcome::Reply(one_shot(shared, &opts, &[item], r)))
}

pub(crate) fn identity(
    shared: &Shared,
    verb: &str,
    req: &Request,
    r: &Replier,
) -> Result<Outcome, Trap> {
    if !matches!(verb, "print" | "getall") {
        return Err(Trap::new(Some(category::MISSING_ITEM), "no such command"));
    }
    let opts = PrintOpts::parse(req)?;
    let item: Props = vec![("name".to_owned(), shared.config.identity.clone())];
    Ok(Outcome::Reply(one_shot(shared, &opts, &[item], r)))
}
