//! The I/O half of the checks: one LAPI probe and one short-lived router connection, each step
//! bounded by [`STEP`](super::STEP) and all of them by the caller's overall deadline. Produces
//! [`Facts`]; [`eval`](super::eval) judges them.

use std::time::{Duration, SystemTime};

use crowdsec_lapi::{LapiClient, LapiError, ProbeError, redact_url};
use routeros_client::{Attributes, Client, Command, ConnectError, Error as RouterError, Query};
use tokio::time::Instant;

use super::Mode;
use super::eval::{
    Access, ContainerFacts, ContainerRow, Facts, LapiFacts, LapiOutcome, LapiTls, ListCount,
    ListFacts, Owned, PolicyFacts, RouterConnect, RouterFacts, RuleFacts, RuleRow, Step, Table,
    WriteProbe, safe,
};
use crate::config::Config;
use crate::daemon::clients;

/// The scratch list of the write probe, never one tikban manages.
pub const PROBE_LIST: &str = "tikban-check";
/// The probe entry: the last address of TEST-NET-1 (RFC 5737), never a real host.
pub const PROBE_ADDRESS: &str = "192.0.2.255";
/// Rules read per table at most: a bound against a hostile or broken peer.
const MAX_RULES: usize = 20_000;

/// Observes everything, LAPI and router side by side.
pub async fn gather(config: &Config, mode: Mode, step: Duration, deadline: Instant) -> Facts {
    let (lapi, router) = tokio::join!(
        lapi(config, step, deadline),
        router(config, mode, step, deadline)
    );
    Facts { lapi, router }
}

/// The state of every router step before the connection exists.
fn not_run<T>() -> Step<T> {
    Step::NotRun("no router connection".into())
}

fn step_deadline(step: Duration, deadline: Instant) -> Instant {
    (Instant::now() + step).min(deadline)
}

async fn lapi(config: &Config, step: Duration, deadline: Instant) -> LapiFacts {
    let l = &config.lapi;
    let https = l
        .url
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("https:");
    let tls = if !https {
        LapiTls::Plain
    } else if l.insecure_skip_verify {
        LapiTls::Insecure
    } else {
        LapiTls::Verified {
            extra_ca: !l.ca.is_empty(),
        }
    };
    let cfg = clients::lapi_config(config);
    let until = step_deadline(step, deadline);
    let probe = match LapiClient::probe(&cfg, until).await {
        Ok(a) => LapiOutcome::Answered {
            status: a.status,
            date: a.date,
            tls_version: a.tls_version,
            elapsed: a.elapsed,
            local_time: SystemTime::now(),
        },
        Err(ProbeError::Config(e)) => LapiOutcome::Config(e.to_string()),
        Err(ProbeError::Lapi(e)) => match e {
            LapiError::Connect { .. } => LapiOutcome::Unreachable(e.to_string()),
            LapiError::Tls { .. } => LapiOutcome::Tls(e.to_string()),
            LapiError::Deadline { after } | LapiError::Timeout { after, .. } => {
                LapiOutcome::TimedOut(after)
            }
            other => LapiOutcome::Protocol(other.to_string()),
        },
        Err(ProbeError::NoAnswer { after }) => LapiOutcome::NoAnswer(after),
        Err(e) => LapiOutcome::Protocol(e.to_string()),
    };
    LapiFacts {
        url: redact_url(&l.url),
        tls,
        client_cert: l.client_cert.is_some(),
        probe,
    }
}

/// Runs `fut` as one step: not at all once the overall deadline has passed or the connection
/// is gone, else within its own deadline.
async fn step_of<T, F>(client: &Client, step: Duration, deadline: Instant, fut: F) -> Step<T>
where
    F: std::future::Future<Output = Result<T, RouterError>>,
{
    if Instant::now() >= deadline {
        return Step::NotRun("the check's overall deadline passed".into());
    }
    if client.is_closed() {
        return Step::NotRun("the router closed the connection".into());
    }
    let started = Instant::now();
    let until = step_deadline(step, deadline);
    match tokio::time::timeout_at(until, fut).await {
        Ok(Ok(v)) => Step::Done(v),
        Ok(Err(RouterError::Timeout { after })) => Step::TimedOut(after),
        Ok(Err(e)) => Step::Failed(e.to_string()),
        Err(_) => Step::TimedOut(until.saturating_duration_since(started)),
    }
}

async fn router(config: &Config, mode: Mode, step: Duration, deadline: Instant) -> RouterFacts {
    let r = &config.router;
    let mut cc = clients::router_config(config);
    cc.connect_timeout = cc.connect_timeout.min(step);
    cc.command_timeout = cc.command_timeout.min(step);
    let target = if r.host.contains(':') {
        format!("[{}]:{}", safe(&r.host, 253), r.port)
    } else {
        format!("{}:{}", safe(&r.host, 253), r.port)
    };
    let lists_cfg = [
        (
            "IPv4",
            "FIREWALL_IPV4_ENABLED",
            "/ip",
            config.lists.v4.clone(),
        ),
        (
            "IPv6",
            "FIREWALL_IPV6_ENABLED",
            "/ipv6",
            config.lists.v6.clone(),
        ),
    ];
    let mut facts = RouterFacts {
        target: target.clone(),
        user: safe(&r.user, 64),
        tls: r.tls.is_some(),
        connect: RouterConnect::Connected,
        version: not_run(),
        access: match mode {
            Mode::Cli => Access::WriteProbe(not_run()),
            Mode::Startup => Access::Policy(not_run()),
        },
        lists: lists_cfg
            .iter()
            .map(|(family, var, _, name)| ListFacts {
                family,
                enabled_var: var,
                name: name.clone(),
                count: not_run(),
            })
            .collect(),
        rules: lists_cfg
            .iter()
            .filter_map(|(_, _, base, name)| {
                name.as_ref().map(|list| RuleFacts {
                    base,
                    list: list.clone(),
                    rules: not_run(),
                })
            })
            .collect(),
        log: not_run(),
        container: not_run(),
    };
    let connect_for = cc.connect_timeout;
    let until = step_deadline(step, deadline);
    let client = match tokio::time::timeout_at(until, Client::connect(cc)).await {
        Err(_) => {
            facts.connect = RouterConnect::TimedOut(connect_for);
            return facts;
        }
        Ok(Err(e)) => {
            facts.connect = match &e {
                ConnectError::Connect { .. } => RouterConnect::Unreachable(e.to_string()),
                ConnectError::Timeout { after } => RouterConnect::TimedOut(*after),
                ConnectError::TlsConfig(_)
                | ConnectError::Tls(_)
                | ConnectError::AnonymousDhNotSupported { .. }
                | ConnectError::FingerprintMismatch { .. } => RouterConnect::Tls(e.to_string()),
                _ => RouterConnect::Login(e.to_string()),
            };
            return facts;
        }
        Ok(Ok(client)) => client,
    };

    facts.version = step_of(&client, step, deadline, version(&client)).await;
    facts.access = match mode {
        Mode::Cli => {
            let prefix = &config.lists.comment_prefix;
            let managed = [config.lists.v4.as_deref(), config.lists.v6.as_deref()];
            Access::WriteProbe(
                step_of(
                    &client,
                    step,
                    deadline,
                    write_probe(&client, prefix, managed),
                )
                .await,
            )
        }
        Mode::Startup => {
            Access::Policy(step_of(&client, step, deadline, policy(&client, &r.user)).await)
        }
    };
    let count_owned = matches!(mode, Mode::Cli);
    for l in &mut facts.lists {
        let Some(name) = l.name.clone() else { continue };
        let menu = if l.family == "IPv4" {
            "/ip/firewall/address-list"
        } else {
            "/ipv6/firewall/address-list"
        };
        let prefix = &config.lists.comment_prefix;
        // Stop counting owned entries a second before the step's deadline, to report what was
        // counted rather than nothing.
        let stop = step_deadline(step, deadline)
            .checked_sub(Duration::from_secs(1))
            .unwrap_or_else(Instant::now);
        l.count = step_of(
            &client,
            step,
            deadline,
            count_list(&client, menu, &name, prefix, count_owned.then_some(stop)),
        )
        .await;
    }
    for rf in &mut facts.rules {
        rf.rules = step_of(&client, step, deadline, rules(&client, rf.base)).await;
    }
    facts.log = step_of(&client, step, deadline, log_count(&client)).await;
    facts.container = step_of(&client, step, deadline, container(&client)).await;
    // The session ends here (one `logged in`/`logged out` pair in the router's log).
    let _ = tokio::time::timeout(Duration::from_secs(1), client.quit()).await;
    facts
}

/// `/system/resource` `version`.
async fn version(client: &Client) -> Result<String, RouterError> {
    let cmd = Command::builder("/system/resource/print")
        .proplist(&["version"])
        .build()?;
    let resp = client.execute(cmd).await?;
    Ok(resp
        .rows
        .first()
        .and_then(|r| r.get_lossy("version"))
        .map(|v| v.into_owned())
        .unwrap_or_default())
}

/// Adds a probe entry to a scratch list (with a 1-minute timeout, so it goes away whatever
/// happens) and removes it again.
async fn write_probe(
    client: &Client,
    prefix: &str,
    managed: [Option<&str>; 2],
) -> Result<WriteProbe, RouterError> {
    let list = if managed.contains(&Some(PROBE_LIST)) {
        format!("{PROBE_LIST}-probe")
    } else {
        PROBE_LIST.to_owned()
    };
    let comment = format!("{prefix} check");
    let add = Command::builder("/ip/firewall/address-list/add")
        .attr("list", &list)
        .attr("address", PROBE_ADDRESS)
        .attr("timeout", "1m")
        .attr("comment", &comment)
        .build()?;
    let leftover = match client.execute(add).await {
        Ok(resp) => match resp.ret_str() {
            Some(id) => return remove(client, id, false).await,
            // No id in the answer: look the entry up like a leftover.
            None => false,
        },
        Err(RouterError::Trap { message, .. }) if message.contains("already have such entry") => {
            true
        }
        Err(e @ RouterError::Trap { .. }) => return Ok(WriteProbe::Refused(e.to_string())),
        Err(e) => return Err(e),
    };
    let print = Command::builder("/ip/firewall/address-list/print")
        .proplist(&[".id", "comment"])
        .query(Query::Eq("list".into(), list.clone().into_bytes()))
        .query(Query::Eq("address".into(), PROBE_ADDRESS.into()))
        .build()?;
    let rows = client.execute(print).await?.rows;
    let ours: Vec<String> = rows
        .iter()
        .filter(|r| r.get_lossy("comment").as_deref() == Some(comment.as_str()))
        .filter_map(|r| r.get_lossy(".id").map(|id| id.into_owned()))
        .collect();
    let [id] = ours.as_slice() else {
        return Ok(WriteProbe::NotRemoved(format!(
            "{PROBE_ADDRESS} on list {} is not tikban's probe entry; left alone",
            safe(&list, 64)
        )));
    };
    remove(client, id, leftover).await
}

async fn remove(client: &Client, id: &str, leftover: bool) -> Result<WriteProbe, RouterError> {
    let cmd = Command::builder("/ip/firewall/address-list/remove")
        .id(id)
        .build()?;
    Ok(match client.execute(cmd).await {
        Ok(_) => WriteProbe::Done { leftover },
        Err(e) if e.is_connection_lost() => return Err(e),
        Err(e) => WriteProbe::NotRemoved(e.to_string()),
    })
}

/// The group of `user` and its policy, if the user may read them.
async fn policy(client: &Client, user: &str) -> Result<Option<PolicyFacts>, RouterError> {
    let cmd = Command::builder("/user/print")
        .proplist(&["name", "group"])
        .query(Query::Eq("name".into(), user.as_bytes().to_vec()))
        .build()?;
    let resp = client.execute(cmd).await?;
    let Some(group) = resp.rows.first().and_then(|r| r.get_lossy("group")) else {
        return Ok(None);
    };
    let group = group.into_owned();
    let cmd = Command::builder("/user/group/print")
        .proplist(&["name", "policy"])
        .query(Query::Eq("name".into(), group.as_bytes().to_vec()))
        .build()?;
    let resp = client.execute(cmd).await?;
    Ok(resp
        .rows
        .first()
        .and_then(|r| r.get_lossy("policy"))
        .map(|policy| PolicyFacts {
            group,
            policy: policy.into_owned(),
        }))
}

/// The entries of a list, and (when `owned_until` is given) how many carry tikban's prefix,
/// counted until that instant.
async fn count_list(
    client: &Client,
    menu: &str,
    list: &str,
    prefix: &str,
    owned_until: Option<Instant>,
) -> Result<ListCount, RouterError> {
    let cmd = Command::builder(&format!("{menu}/print"))
        .flag("count-only")
        .query(Query::Eq("list".into(), list.as_bytes().to_vec()))
        .build()?;
    let resp = client.execute(cmd).await?;
    let total = resp
        .ret_str()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    let Some(until) = owned_until else {
        return Ok(ListCount { total, owned: None });
    };
    let cmd = Command::builder(&format!("{menu}/print"))
        .proplist(&["comment"])
        .query(Query::Eq("list".into(), list.as_bytes().to_vec()))
        .build()?;
    let mut rows = client.stream(cmd).await?;
    let mut count = 0;
    let mut complete = true;
    loop {
        match tokio::time::timeout_at(until, rows.next()).await {
            Err(_) => {
                complete = false;
                break;
            }
            Ok(None) => break,
            Ok(Some(row)) => {
                let row = row?;
                if owned(row.get_lossy("comment").as_deref(), prefix) {
                    count += 1;
                }
            }
        }
    }
    Ok(ListCount {
        total,
        owned: Some(Owned { count, complete }),
    })
}

/// tikban's ownership rule: the comment is the prefix, or the prefix and a space
/// ([`Engine::is_owned`](crate::engine::Engine::is_owned)).
fn owned(comment: Option<&str>, prefix: &str) -> bool {
    comment
        .is_some_and(|c| c == prefix || c.strip_prefix(prefix).is_some_and(|r| r.starts_with(' ')))
}

/// Every rule of `raw`, then of `filter`, in order.
async fn rules(client: &Client, base: &str) -> Result<Vec<RuleRow>, RouterError> {
    let mut out = Vec::new();
    for table in [Table::Raw, Table::Filter] {
        let cmd = Command::builder(&format!("{base}/firewall/{}/print", table.name())).build()?;
        let mut rows = client.stream(cmd).await?;
        let mut n = 0;
        while let Some(row) = rows.next().await {
            let row = row?;
            n += 1;
            if n > MAX_RULES {
                return Err(RouterError::Trap {
                    category: None,
                    message: format!(
                        "more than {MAX_RULES} rules in {base}/firewall/{}",
                        table.name()
                    ),
                    count: 1,
                });
            }
            out.push(rule_row(table, &row));
        }
    }
    Ok(out)
}

fn rule_row(table: Table, row: &Attributes) -> RuleRow {
    let pairs: Vec<(String, String)> = row
        .iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect();
    RuleRow::from_props(table, pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// `/log/print count-only`: the user may read the log (guard needs it).
async fn log_count(client: &Client) -> Result<Option<u64>, RouterError> {
    let cmd = Command::builder("/log/print").flag("count-only").build()?;
    let resp = client.execute(cmd).await?;
    Ok(resp.ret_str().and_then(|n| n.trim().parse().ok()))
}

/// Memory limits from `/container/print` and `/container/config/print`; either may be missing
/// (no container package, an older RouterOS, no permission).
async fn container(client: &Client) -> Result<ContainerFacts, RouterError> {
    let mut facts = ContainerFacts {
        hostname: hostname(),
        ..ContainerFacts::default()
    };
    let cmd = Command::builder("/container/print")
        .proplist(&["name", "hostname", "memory-high", "memory-max"])
        .build()?;
    match client.execute(cmd).await {
        Ok(resp) => {
            let text = |r: &Attributes, k: &str| r.get_lossy(k).map(|v| v.into_owned());
            facts.containers = Some(
                resp.rows
                    .iter()
                    .take(64)
                    .map(|r| ContainerRow {
                        name: text(r, "name"),
                        hostname: text(r, "hostname"),
                        memory_high: text(r, "memory-high"),
                        memory_max: text(r, "memory-max"),
                    })
                    .collect(),
            );
        }
        Err(e) if e.is_connection_lost() => return Err(e),
        Err(_) => {}
    }
    // `/container/config/print` takes no `.proplist` (tests/data/routeros-schema).
    let cmd = Command::builder("/container/config/print").build()?;
    match client.execute(cmd).await {
        Ok(resp) => {
            facts.config = resp.rows.first().map(|r| {
                ["memory-high", "memory-max", "ram-high", "memory-current"]
                    .iter()
                    .filter_map(|k| r.get_lossy(k).map(|v| ((*k).to_owned(), v.into_owned())))
                    .collect()
            });
        }
        Err(e) if e.is_connection_lost() => return Err(e),
        Err(_) => {}
    }
    Ok(facts)
}

/// This host's name, which is the container's `hostname`; read from the kernel, nothing is
/// written.
fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty() && name.len() <= 253).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::owned;

    #[test]
    fn ownership_matches_the_engine() {
        assert!(owned(Some("tikban"), "tikban"));
        assert!(owned(Some("tikban cscli"), "tikban"));
        assert!(!owned(Some("tikban-other x"), "tikban"));
        assert!(!owned(None, "tikban"));
    }
}
