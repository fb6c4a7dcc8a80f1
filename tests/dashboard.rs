//! The Grafana dashboard (`dashboards/tikban.json`) against a real Prometheus.
//!
//! tikban runs against the real LAPI 1.4.6 and `routeros-sim` (the `World` of the other
//! end-to-end tests) and plays a small story: bans from `cscli`, an imported blocklist, guard bans
//! from brute force lines in the router log, allowlisted, too wide and over-budget bans that are
//! skipped, a LAPI outage, trapped adds and a router reconnect. Debian's `prometheus` binary
//! scrapes it every second. Then every PromQL expression of the dashboard (each target's `expr`,
//! and the variable queries) goes to Prometheus's `/api/v1/query` with the variables replaced by
//! concrete values: it must parse, and it must return data unless its panel's description says
//! "may be empty". Every metric name the dashboard uses must be a family in tikban's `/metrics`
//! (`_bucket`, `_sum`, `_count` map to their histogram), so renaming a metric fails this test; a
//! fixture with a wrong name (`tests/data/dashboard/renamed-metric.json`) shows the message once.
//!
//! A missing `prometheus` binary fails the test with the command that installs it. With
//! `TIKBAN_DASHBOARD_PNG=<file.png>` the story runs longer and `scripts/render-dashboard.py`
//! draws the dashboard from the scraped data before Prometheus stops (docs/operations.md,
//! "Dashboard").

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use routeros_sim::{Family, Table};
use serde_json::Value;
use support::{POLLS_ERROR, Proxy, Tikban, V4, V6, World, tail, with_env};

/// The dashboard, relative to the workspace root.
const DASHBOARD: &str = "dashboards/tikban.json";
/// A dashboard that uses a renamed metric: the check must name it.
const RENAMED_FIXTURE: &str = "tests/data/dashboard/renamed-metric.json";
/// A panel whose description contains this (any case) may return no data: its series count
/// problems that a healthy tikban never has. Its expressions must still parse.
const MAY_BE_EMPTY: &str = "may be empty";
/// The datasource every panel, target and variable names: the `__inputs` entry Grafana's import
/// asks for.
const DATASOURCE_UID: &str = "${DS_PROMETHEUS}";
/// Series Prometheus adds itself, allowed next to tikban's families.
const SYNTHETIC: &[&str] = &["up"];
/// How the installation command reads in failure messages (and in .ci/run).
const INSTALL: &str = "apt-get install -y --no-install-recommends prometheus";

const WAIT: Duration = Duration::from_secs(20);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

fn load(rel: &str) -> Value {
    let path = workspace().join(rel);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

#[test]
fn dashboard_queries_return_data_from_a_real_prometheus() {
    let dashboard = load(DASHBOARD);
    let layout = check_layout(&dashboard);
    assert!(layout.is_ok(), "{DASHBOARD}:\n{}", layout.unwrap_err());

    // A relative path is taken from the workspace root (cargo runs tests in tests/).
    let render_to = std::env::var_os("TIKBAN_DASHBOARD_PNG").map(|p| workspace().join(p));
    let prometheus_bin = prometheus_binary();

    // Long enough for the picture: the router counters are read once a minute, the rates need
    // a few scrapes per wave.
    let waves = if render_to.is_some() { 6 } else { 2 };
    let w = World::start();
    let story = Story::set_up(&w, waves);
    let mut t = story.start_tikban(&w);
    t.wait_healthy(WAIT);

    let prom = Prometheus::start(&prometheus_bin, t.metrics_port);
    let started = unix_now();
    prom.wait_for_scrape_after(started, &t);

    for wave in 0..waves {
        story.wave(&w, &mut t, wave, render_to.is_some());
        if render_to.is_some() {
            prom.wait_scrapes(12, &t);
        }
    }
    story.settle(&w, &mut t, waves);
    let settled = unix_now();
    prom.wait_for_scrape_after(settled, &t);
    let metrics_text = t.get("/metrics").1;
    let families = exported_families(&metrics_text);

    // The dashboard: names, then every query.
    let names = check_metric_names(&dashboard, &families);
    assert!(names.is_ok(), "{DASHBOARD}:\n{}", names.unwrap_err());
    let window = format!("{:.0}s", unix_now() - started + 5.0);
    let results = run_queries(&dashboard, &prom, &window);
    let failures: Vec<&QueryResult> = results.iter().filter(|r| !r.ok()).collect();
    assert!(
        failures.is_empty(),
        "{DASHBOARD}: {} of {} queries failed:\n{}\ntikban log:\n{}",
        failures.len(),
        results.len(),
        failures
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
        tail(&t.output())
    );
    let empty: Vec<String> = results
        .iter()
        .filter(|r| r.may_be_empty && r.samples.as_ref().is_ok_and(Vec::is_empty))
        .map(|r| format!("{} / {}", r.panel, r.ref_id))
        .collect();
    eprintln!(
        "{} queries ran; empty and allowed to be: {empty:?}",
        results.len()
    );

    // What the panels show is what happened.
    check_values(&results, &prom, &w, waves, story.max_entries);

    // A renamed metric fails, naming the metric and the panel (shown once here).
    let fixture = load(RENAMED_FIXTURE);
    let err = check_metric_names(&fixture, &families)
        .expect_err("a dashboard with a renamed metric must fail the name check");
    eprintln!("the check on {RENAMED_FIXTURE} fails as it should:\n{err}");
    assert!(
        err.contains("tikban_router_entries_count") && err.contains("Router entries (renamed)"),
        "{err}"
    );
    let fixture_results = run_queries(&fixture, &prom, &window);
    let failed: Vec<String> = fixture_results
        .iter()
        .filter(|r| !r.ok())
        .map(|r| r.to_string())
        .collect();
    assert!(
        failed.len() == 1 && failed[0].contains("returned no data"),
        "the renamed metric's query must be the one that returns nothing: {failed:?}"
    );

    if let Some(png) = render_to {
        // The settled state (the late blocklist over the budget) as a plateau, not an edge.
        prom.wait_scrapes(20, &t);
        let end = unix_now();
        render(&prom, started, end, &t, &png);
    }
    drop(prom);
    assert!(t.is_running(), "tikban exited:\n{}", t.output());
}

// === The story ===

/// The router, LAPI and env of one run.
struct Story {
    /// `MAX_ENTRIES`: room for every ban of the waves; the late blocklist goes over it.
    max_entries: usize,
    proxy: Proxy,
    rules: [String; 2],
    machine: (String, String),
}

/// Addresses of the blocklist imported in the first wave; a second one of
/// [`LATE_LIST_SIZE`] at the end goes over the entry budget.
const LIST_SIZE: usize = 12;
const LATE_LIST_SIZE: usize = 40;
const ALLOWLIST: &str = "192.168.88.0/24";

impl Story {
    fn set_up(w: &World, waves: usize) -> Story {
        let lapi: SocketAddr = w
            .lapi
            .url()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("LAPI address");
        let proxy = Proxy::start(&w.rt, lapi);
        // The drop rules the setup script creates, with counters tikban reads.
        let rules = [(Family::V4, V4), (Family::V6, V6)].map(|(family, list)| {
            w.sim
                .add_rule(
                    family,
                    Table::Raw,
                    &[
                        ("chain", "prerouting"),
                        ("action", "drop"),
                        ("src-address-list", list),
                    ],
                )
                .expect("add a raw drop rule")
        });
        w.sim.set_memory(1 << 30, 700 << 20);
        let machine = w.lapi.add_machine("tikban-dashboard");
        Story {
            // Per wave a v4 and a v6 ban and a guard ban, one more for the trapped add.
            max_entries: 3 * waves + 1 + LIST_SIZE + 2,
            proxy,
            rules,
            machine,
        }
    }

    fn start_tikban(&self, w: &World) -> Tikban {
        let lapi_url = format!("http://{}/", self.proxy.addr);
        let env = w.env_for(&lapi_url, w.server.addr(), 0);
        let budget = self.max_entries.to_string();
        Tikban::start(&with_env(
            env,
            &[
                ("LOG_LEVEL", "info"),
                ("ALLOWLIST", ALLOWLIST),
                ("MAX_ENTRIES", &budget),
                ("CROWDSEC_MACHINE_ID", &self.machine.0),
                ("CROWDSEC_MACHINE_PASSWORD", &self.machine.1),
            ],
        ))
    }

    /// One wave: bans, skips, an attack on the router; in some waves a fault.
    fn wave(&self, w: &World, t: &mut Tikban, wave: usize, long: bool) {
        let v4 = format!("192.0.2.{}", 10 + wave);
        let v6 = format!("2001:db8::{:x}", 0x10 + wave);
        let attacker = format!("203.0.113.{}", 10 + wave);
        w.lapi.add_decision(&v4, "4h", &[]);
        w.lapi.add_decision(&v6, "4h", &[]);
        if wave == 0 {
            w.lapi.import(&blocklist(0, LIST_SIZE), &[]);
        }
        // Skipped: an allowlisted address, ranges wider than MAX_RANGE_V4/V6.
        w.lapi
            .add_decision(&format!("192.168.88.{}", 10 + wave), "4h", &[]);
        let range_v4 = if wave == 0 {
            "0.0.0.0/0".to_owned()
        } else {
            format!("{}.0.0.0/4", 16 * wave)
        };
        w.lapi.add_decision(&range_v4, "4h", &[]);
        w.lapi
            .add_decision(&format!("{:x}::/16", 0x2001 + wave), "4h", &[]);

        // The router's own log: an admin logs in and out, a denied Winbox connection, then a
        // brute force with a new user name each time (login-bf at the 6th, user-enum at the
        // 11th).
        w.sim.log(
            "system,info,account",
            "user admin logged in from 192.168.88.2 via winbox",
        );
        w.sim.log(
            "system,info,account",
            "user admin logged out from 192.168.88.2 via winbox",
        );
        w.sim.log(
            "system,error,critical",
            &format!("denied winbox/dude connect from 198.51.100.{}", 200 + wave),
        );
        let via = if wave % 2 == 0 { "ssh" } else { "winbox" };
        for n in 0..12 {
            w.sim.log(
                "system,error,critical",
                &format!("login failure for user user{n} from {attacker} via {via}"),
            );
            // An attack spread over a second or two, as it arrives on a router: the rates get
            // more than one scrape.
            std::thread::sleep(Duration::from_millis(if long { 250 } else { 100 }));
        }

        let bans = (wave + 1) as f64;
        t.wait_metric(
            "tikban_guard_bans_total{scenario=\"tikban/routeros-login-bf\"}",
            bans,
            WAIT,
        );
        t.wait_metric(
            "tikban_guard_detections_total{scenario=\"tikban/routeros-user-enum\"}",
            bans,
            WAIT,
        );
        t.wait_metric(
            "tikban_decisions_skipped_total{reason=\"allowlist\"}",
            bans,
            WAIT,
        );
        t.wait_metric(
            "tikban_decisions_skipped_total{reason=\"range-v4\"}",
            bans,
            WAIT,
        );
        t.wait_metric(
            "tikban_decisions_skipped_total{reason=\"range-v6\"}",
            bans,
            WAIT,
        );
        w.wait_until("this wave's bans on the router", WAIT, |w| {
            let a = w.addresses(Family::V4, V4);
            a.contains(&v4)
                && a.contains(&attacker)
                && w.addresses(Family::V6, V6).contains(&format!("{}/128", v6))
        });

        // Faults: all three in the short run's second wave; spread out in the long run.
        let (reconnect, outage, traps) = if long {
            (wave % 3 == 1, wave % 3 == 2, wave == 5)
        } else {
            (wave == 1, wave == 1, wave == 1)
        };
        if reconnect {
            // The drop rules counted traffic; a router reconnect makes tikban read the counters
            // now (else once a minute).
            let n = (wave as u64 + 1) * 1_500;
            w.sim.set_rule_counters(&self.rules[0], n * 90, n);
            w.sim.set_rule_counters(&self.rules[1], n * 12, n / 10);
            let before = w.last_connection();
            w.sim.faults().kill_connections();
            w.wait_for_reconcile_after(before, WAIT);
            t.wait_metric(
                "tikban_dropped_packets_total{ip_type=\"ipv4\"}",
                n as f64,
                WAIT,
            );
        }
        if outage {
            // A LAPI outage of a few polls.
            let errors = t.metric(POLLS_ERROR);
            self.proxy.cut();
            t.wait_metric(POLLS_ERROR, errors + 2.0, WAIT);
            self.proxy.restore();
            t.wait_metric("tikban_connected{peer=\"lapi\"}", 1.0, WAIT);
        }
        if traps {
            // The router refuses adds for a moment.
            let traps = "tikban_router_commands_total{kind=\"add\",result=\"trap\"}";
            let before = t.metric(traps);
            w.sim.faults().trap_add_fraction(1.0);
            w.lapi
                .add_decision(&format!("192.0.2.{}", 100 + wave), "4h", &[]);
            t.wait_metric(traps, before + 1.0, WAIT);
            w.sim.faults().trap_add_fraction(0.0);
        }
    }

    /// Waits until tikban has written what it will write and its gauges show it.
    fn settle(&self, w: &World, t: &mut Tikban, waves: usize) {
        // A second blocklist: more bans than the budget holds.
        w.lapi.import(&blocklist(LIST_SIZE, LATE_LIST_SIZE), &[]);
        // Guard's alerts reached LAPI (machine credentials), and every skip reason happened.
        t.wait_metric("tikban_guard_alerts_total{result=\"sent\"}", 1.0, WAIT);
        t.wait_metric(
            "tikban_decisions_skipped_total{reason=\"budget\"}",
            1.0,
            WAIT,
        );
        w.wait_until("the router at the entry budget", WAIT, |w| {
            w.sim.all_entries(Family::V4).len() + w.sim.all_entries(Family::V6).len()
                == self.max_entries
        });
        for up in [
            "tikban_connected{peer=\"lapi\"}",
            "tikban_connected{peer=\"router\"}",
            "tikban_guard_log_connected",
        ] {
            t.wait_metric(up, 1.0, WAIT);
        }
        let on_router = self.max_entries as f64;
        t.wait("the gauges to show the router", WAIT, |t| {
            let m = t.get("/metrics").1;
            support::metric(&m, "tikban_router_entries{ip_type=\"ipv4\"}")
                + support::metric(&m, "tikban_router_entries{ip_type=\"ipv6\"}")
                == on_router
                && support::metric(&m, "tikban_decisions_over_budget") > 0.0
                && support::metric(
                    &m,
                    "tikban_guard_bans_total{scenario=\"tikban/routeros-login-bf\"}",
                ) == waves as f64
        });
    }
}

/// A blocklist of `count` addresses from 198.51.100.`first + 1`, for `cscli decisions import`,
/// shorter than the other bans (the budget leaves the shortest off first).
fn blocklist(first: usize, count: usize) -> String {
    let items: Vec<Value> = (first..first + count)
        .map(|i| {
            serde_json::json!({
                "duration": "1h",
                "origin": "lists",
                "reason": "firehol_level1",
                "scope": "ip",
                "type": "ban",
                "value": format!("198.51.100.{}", 1 + i),
            })
        })
        .collect();
    Value::Array(items).to_string()
}

// === Checks of the dashboard JSON ===

/// A non-row panel of the dashboard (rows nested in collapsed rows included).
struct Panel<'a> {
    title: String,
    json: &'a Value,
}

fn panels(dashboard: &Value) -> Vec<Panel<'_>> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        if p["type"] == "row" {
            for inner in p["panels"].as_array().into_iter().flatten() {
                out.push(Panel {
                    title: inner["title"].as_str().unwrap_or("?").to_owned(),
                    json: inner,
                });
            }
        } else {
            out.push(Panel {
                title: p["title"].as_str().unwrap_or("?").to_owned(),
                json: p,
            });
        }
    }
    out
}

fn is_prometheus_input(ds: &Value) -> bool {
    ds["type"] == "prometheus" && ds["uid"] == DATASOURCE_UID
}

/// Grafana's import contract and a readable layout: the `DS_PROMETHEUS` input, the datasource
/// on every panel, target and variable, unique ids, panels that fit the 24-column grid without
/// overlapping, and a description on every panel (the "may be empty" marker lives there).
fn check_layout(d: &Value) -> Result<(), String> {
    let mut errors = Vec::new();
    let schema = d["schemaVersion"].as_u64().unwrap_or(0);
    if !(39..=42).contains(&schema) {
        errors.push(format!(
            "schemaVersion {schema}: Grafana 11 and 12 write 39 to 42"
        ));
    }
    let inputs = d["__inputs"].as_array().cloned().unwrap_or_default();
    if !inputs.iter().any(|i| {
        i["name"] == "DS_PROMETHEUS" && i["type"] == "datasource" && i["pluginId"] == "prometheus"
    }) {
        errors
            .push("no __inputs entry DS_PROMETHEUS (type datasource, pluginId prometheus)".into());
    }
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if !is_prometheus_input(&v["datasource"]) {
            errors.push(format!(
                "variable {} does not use {DATASOURCE_UID}",
                v["name"]
            ));
        }
    }
    let mut ids = BTreeSet::new();
    let mut cells = BTreeMap::new();
    let all: Vec<&Value> = d["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| std::iter::once(p).chain(p["panels"].as_array().into_iter().flatten()))
        .collect();
    for p in &all {
        let title = p["title"].as_str().unwrap_or("?");
        if !ids.insert(p["id"].as_u64().unwrap_or(0)) {
            errors.push(format!("panel {title:?}: id {} is not unique", p["id"]));
        }
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap_or(99),
            g["y"].as_u64().unwrap_or(0),
            g["w"].as_u64().unwrap_or(0),
            g["h"].as_u64().unwrap_or(0),
        );
        if w == 0 || h == 0 || x + w > 24 {
            errors.push(format!(
                "panel {title:?}: gridPos {g} is outside the 24-column grid"
            ));
        }
        for cx in x..(x + w).min(24) {
            for cy in y..y + h {
                if let Some(other) = cells.insert((cx, cy), title) {
                    errors.push(format!(
                        "panel {title:?} overlaps {other:?} at ({cx}, {cy})"
                    ));
                }
            }
        }
    }
    let panels = panels(d);
    if !(12..=16).contains(&panels.len()) {
        errors.push(format!("{} panels: keep it to 12 to 16", panels.len()));
    }
    for p in &panels {
        if !is_prometheus_input(&p.json["datasource"]) {
            errors.push(format!("panel {:?} does not use {DATASOURCE_UID}", p.title));
        }
        if p.json["description"].as_str().is_none_or(str::is_empty) {
            errors.push(format!("panel {:?} has no description", p.title));
        }
        let targets = p.json["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            errors.push(format!("panel {:?} has no query", p.title));
        }
        for t in targets {
            if !is_prometheus_input(&t["datasource"]) {
                errors.push(format!(
                    "panel {:?} target {} does not use {DATASOURCE_UID}",
                    p.title, t["refId"]
                ));
            }
        }
    }
    errors.dedup();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}

/// Every PromQL expression of a dashboard: `(panel title, refId, expr, may be empty)`, then the
/// variable queries as `("variable NAME", "", query, false)`.
fn expressions(d: &Value) -> Vec<(String, String, String, bool)> {
    let mut out = Vec::new();
    for p in panels(d) {
        let may_be_empty = p.json["description"]
            .as_str()
            .is_some_and(|s| s.to_lowercase().contains(MAY_BE_EMPTY));
        for t in p.json["targets"].as_array().into_iter().flatten() {
            out.push((
                p.title.clone(),
                t["refId"].as_str().unwrap_or("?").to_owned(),
                t["expr"].as_str().unwrap_or_default().to_owned(),
                may_be_empty,
            ));
        }
    }
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        let q = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .unwrap_or_default();
        out.push((
            format!("variable {}", v["name"].as_str().unwrap_or("?")),
            String::new(),
            q.to_owned(),
            false,
        ));
    }
    out
}

/// `# TYPE name kind` of a Prometheus text exposition.
fn exported_families(metrics: &str) -> BTreeMap<String, String> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_owned(), it.next()?.to_owned()))
        })
        .collect()
}

/// Every metric name the dashboard uses must be a family tikban exports (or a series Prometheus
/// adds itself, [`SYNTHETIC`]).
fn check_metric_names(d: &Value, families: &BTreeMap<String, String>) -> Result<(), String> {
    let mut errors = Vec::new();
    for (panel, ref_id, expr, _) in expressions(d) {
        let expr = label_values_metric(&expr).unwrap_or(expr);
        for name in metric_names(&expr) {
            if SYNTHETIC.contains(&name.as_str()) {
                continue;
            }
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    let base = name.strip_suffix(s)?;
                    (families.get(base).map(String::as_str) == Some("histogram"))
                        .then(|| base.to_owned())
                })
                .unwrap_or_else(|| name.clone());
            if !families.contains_key(&family) {
                errors.push(format!(
                    "panel {panel:?} {ref_id}: metric {name} is not in tikban's /metrics \
                     (renamed or removed? the families it exports: {})",
                    families.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}

/// The series selector inside Grafana's `label_values(SELECTOR, LABEL)`.
fn label_values_metric(q: &str) -> Option<String> {
    let (selector, _) = label_values_args(q)?;
    Some(selector)
}

fn label_values_args(q: &str) -> Option<(String, String)> {
    let inner = q.trim().strip_prefix("label_values(")?.strip_suffix(')')?;
    let (selector, label) = inner.rsplit_once(',')?;
    Some((selector.trim().to_owned(), label.trim().to_owned()))
}

/// The metric names in a PromQL expression: identifiers outside label matchers, strings,
/// durations and label lists (`by (…)`, `without (…)`, `on (…)`, `ignoring (…)`,
/// `group_left (…)`, `group_right (…)`) that are not function or aggregation names nor keywords.
fn metric_names(expr: &str) -> Vec<String> {
    const LIST_KEYWORDS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Aggregation operators: `sum by (le) (…)` has no parenthesis right after the name.
    const AGGREGATIONS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    const KEYWORDS: &[&str] = &[
        "bool", "and", "or", "unless", "offset", "inf", "nan", "atan2", "start", "end",
    ];
    let b: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let (mut i, mut braces, mut parens) = (0, 0usize, 0usize);
    let mut label_list: Option<usize> = None;
    let mut list_next = false;
    let next_non_space = |mut j: usize| {
        while j < b.len() && b[j].is_whitespace() {
            j += 1;
        }
        b.get(j).copied()
    };
    while i < b.len() {
        let c = b[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < b.len() && b[i] != c {
                    if b[i] == '\\' && c != '`' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            '#' => {
                while i < b.len() && b[i] != '\n' {
                    i += 1;
                }
            }
            '{' => {
                braces += 1;
                i += 1;
            }
            '}' => {
                braces = braces.saturating_sub(1);
                i += 1;
            }
            '[' => {
                while i < b.len() && b[i] != ']' {
                    i += 1;
                }
                i += 1;
            }
            '(' => {
                parens += 1;
                if list_next {
                    label_list = Some(parens);
                    list_next = false;
                }
                i += 1;
            }
            ')' => {
                if label_list == Some(parens) {
                    label_list = None;
                }
                parens = parens.saturating_sub(1);
                i += 1;
            }
            c if c.is_ascii_digit() || c == '.' => {
                // A number or a duration (`5m`, `1e3`, `0x1f`).
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '.' || b[i] == '_') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '_' || b[i] == ':') {
                    i += 1;
                }
                let word: String = b[start..i].iter().collect();
                let lower = word.to_lowercase();
                if braces > 0 || label_list.is_some() {
                    continue; // a label name
                }
                if LIST_KEYWORDS.contains(&lower.as_str()) {
                    list_next = next_non_space(i) == Some('(');
                    continue;
                }
                if KEYWORDS.contains(&lower.as_str())
                    || AGGREGATIONS.contains(&lower.as_str())
                    || next_non_space(i) == Some('(')
                {
                    continue; // an operator, or a function or aggregation name
                }
                if !names.contains(&word) {
                    names.push(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

// === Queries ===

/// One sample of an instant query: its labels and its value.
type Sample = (BTreeMap<String, String>, f64);

struct QueryResult {
    panel: String,
    ref_id: String,
    expr: String,
    /// `expr` with the variables replaced: what Prometheus ran.
    query: String,
    may_be_empty: bool,
    /// The samples as `(labels, value)`, or the error.
    samples: Result<Vec<Sample>, String>,
}

impl QueryResult {
    fn ok(&self) -> bool {
        match &self.samples {
            Err(_) => false,
            Ok(s) if s.is_empty() => self.may_be_empty,
            // Data: at least one number (histogram_quantile of nothing is NaN).
            Ok(s) => s.iter().any(|(_, v)| v.is_finite()),
        }
    }

    /// The value of the sample whose labels include `labels` (the first one when empty).
    fn value(&self, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples.as_ref().ok()?.iter().find_map(|(l, v)| {
            labels
                .iter()
                .all(|(k, want)| l.get(*k).map(String::as_str) == Some(*want))
                .then_some(*v)
        })
    }

    fn label_values(&self, label: &str) -> BTreeSet<String> {
        self.samples
            .iter()
            .flatten()
            .filter_map(|(l, _)| l.get(label).cloned())
            .collect()
    }
}

impl std::fmt::Display for QueryResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match &self.samples {
            Err(e) => format!("failed: {e}"),
            Ok(s) if s.is_empty() => "returned no data".to_owned(),
            Ok(s) if !s.iter().any(|(_, v)| v.is_finite()) => {
                format!("returned only NaN: {s:?}")
            }
            Ok(s) => format!("{} series", s.len()),
        };
        write!(
            f,
            "panel {:?} {}: {what}\n    {}",
            self.panel, self.ref_id, self.expr
        )
    }
}

/// Runs the variable queries, then every target with `$instance`, `$list` and Grafana's
/// interval variables replaced the way Grafana would (a multi-value variable as `(a|b)`).
fn run_queries(d: &Value, prom: &Prometheus, window: &str) -> Vec<QueryResult> {
    let mut vars: BTreeMap<String, String> = [
        ("__rate_interval", window),
        ("__interval", "1s"),
        ("__range", window),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let mut results = Vec::new();
    // Variables in order: a later one may use an earlier one ($list uses $instance).
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap_or("?").to_owned();
        let query = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .unwrap_or_default();
        let definition = v["definition"].as_str().unwrap_or(query);
        let mut r = QueryResult {
            panel: format!("variable {name}"),
            ref_id: String::new(),
            expr: query.to_owned(),
            query: String::new(),
            may_be_empty: false,
            samples: Err(String::new()),
        };
        r.samples = if definition != query {
            Err(format!("definition {definition:?} differs from the query"))
        } else if let Some((selector, label)) = label_values_args(query) {
            // Grafana asks for the label's values on the series the selector matches.
            substitute(&format!("count by ({label}) ({selector})"), &vars).and_then(|q| {
                r.query.clone_from(&q);
                prom.query(&q)
            })
        } else {
            Err("only label_values(SELECTOR, LABEL) variables are supported here".into())
        };
        if let Some((_, label)) = label_values_args(query) {
            let values = r.label_values(&label);
            let value = if v["multi"] == true && values.len() > 1 {
                format!("({})", values.into_iter().collect::<Vec<_>>().join("|"))
            } else {
                values.into_iter().next().unwrap_or_default()
            };
            vars.insert(name, value);
        }
        results.push(r);
    }
    for (panel, ref_id, expr, may_be_empty) in expressions(d) {
        if panel.starts_with("variable ") {
            continue;
        }
        let query = substitute(&expr, &vars);
        let samples = query
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|q| prom.query(q));
        results.push(QueryResult {
            panel,
            ref_id,
            expr,
            query: query.unwrap_or_default(),
            may_be_empty,
            samples,
        });
    }
    results
}

/// `$name` and `${name}` replaced from `vars`; an unknown variable is an error.
fn substitute(expr: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, len) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced.find('}').ok_or("unclosed ${")?;
            (&braced[..end], end + 2)
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        let value = vars
            .get(name)
            .ok_or_else(|| format!("unknown variable ${name}"))?;
        out.push_str(value);
        rest = &after[len..];
    }
    out.push_str(rest);
    if out.contains("[[") {
        return Err("the deprecated [[var]] syntax".into());
    }
    Ok(out)
}

/// What the panels show must be what the story did.
fn check_values(
    results: &[QueryResult],
    prom: &Prometheus,
    w: &World,
    waves: usize,
    max_entries: usize,
) {
    let find = |panel: &str, ref_id: &str| -> &QueryResult {
        results
            .iter()
            .find(|r| r.panel == panel && r.ref_id == ref_id)
            .unwrap_or_else(|| panic!("no query {ref_id} in panel {panel:?}"))
    };
    let waves = waves as f64;
    for ref_id in ["A", "B", "C", "D"] {
        let r = find("Connections", ref_id);
        assert_eq!(r.value(&[]), Some(1.0), "{r}: {:?}", r.samples);
    }
    let version = find("Version", "A");
    assert!(
        version
            .label_values("version")
            .contains(env!("CARGO_PKG_VERSION")),
        "{version}: {:?}",
        version.samples
    );
    // The router and the gauge agree once a scrape saw the last write (a guard ban's copy
    // coming back from LAPI may still move the budget's boundary).
    let r = find("Bans now", "B");
    let last = std::cell::Cell::new((None, 0.0));
    support::wait_for(
        "the dashboard's entry count to match the router",
        WAIT,
        || format!("{r}: (dashboard, router) = {:?}", last.get()),
        || {
            let on_router =
                (w.sim.all_entries(Family::V4).len() + w.sim.all_entries(Family::V6).len()) as f64;
            let shown = prom
                .query(&r.query)
                .ok()
                .and_then(|s| s.first().map(|(_, v)| *v));
            last.set((shown, on_router));
            shown == Some(on_router)
        },
    );
    let r = find("Router entries by list", "A");
    assert_eq!(
        r.label_values("ip_type"),
        BTreeSet::from(["ipv4".to_owned(), "ipv6".to_owned()]),
        "{r}"
    );
    let origins = find("Active decisions by origin", "A").label_values("origin");
    // cscli's bans, the imported blocklists (LAPI 1.4.6 names them cscli-import) and guard's
    // (guard:<scenario> of the latest detection of a source).
    assert!(
        origins.contains("cscli")
            && origins.contains("cscli-import")
            && origins.iter().any(|o| o.starts_with("guard:")),
        "origins: {origins:?}"
    );
    let skipped = find("Skipped bans by reason since start", "A");
    for reason in ["allowlist", "range-v4", "range-v6"] {
        assert_eq!(
            skipped.value(&[("reason", reason)]),
            Some(waves),
            "{skipped}: {:?}",
            skipped.samples
        );
    }
    assert!(
        skipped
            .value(&[("reason", "budget")])
            .is_some_and(|v| v > 0.0),
        "{:?}",
        skipped.samples
    );
    let guard = find("Guard detections and bans since start", "B");
    assert_eq!(
        guard.value(&[("scenario", "tikban/routeros-login-bf")]),
        Some(waves),
        "{:?}",
        guard.samples
    );
    let detected = find("Guard detections and bans since start", "A");
    assert_eq!(
        detected.value(&[("scenario", "tikban/routeros-user-enum")]),
        Some(waves),
        "{:?}",
        detected.samples
    );
    let budget = find("Entry budget", "A");
    assert_eq!(budget.value(&[]), Some(max_entries as f64), "{budget}");
    let events = find("Login events by service and outcome", "A");
    assert!(
        events
            .value(&[("service", "ssh"), ("outcome", "failure")])
            .is_some_and(|v| v > 0.0),
        "{:?}",
        events.samples
    );
    let dropped = find("Traffic dropped by the ban rules", "A");
    assert!(
        dropped
            .value(&[("ip_type", "ipv4")])
            .is_some_and(|v| v > 0.0),
        "the drop counters moved after the first scrape: {:?}",
        dropped.samples
    );
    let p95 = find("Batch duration", "B");
    assert!(
        p95.value(&[]).is_some_and(|v| v > 0.0 && v < 30.0),
        "{:?}",
        p95.samples
    );
}

// === Prometheus ===

/// `prometheus` from `$TIKBAN_PROMETHEUS` or the PATH; a missing binary fails the test.
fn prometheus_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("TIKBAN_PROMETHEUS") {
        return PathBuf::from(p);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("prometheus"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the prometheus binary is not installed: run `{INSTALL}` as root (Debian 12 \
                 ships 2.42), or set TIKBAN_PROMETHEUS to a prometheus binary"
            )
        })
}

/// A Prometheus on loopback scraping one tikban every second, with its storage in a temporary
/// directory. It binds port 0 itself and logs the address (`msg="Listening on"
/// address=127.0.0.1:PORT`): no port race.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(bin: &Path, tikban_port: u16) -> Prometheus {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: tikban\n    static_configs:\n      - targets: ['127.0.0.1:{tikban_port}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let mut child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg("--web.listen-address=127.0.0.1:0")
            .arg("--log.level=info")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e} (install it: `{INSTALL}`)", bin.display()));
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = l.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            if let Some(a) = listening_address(&log.lock().unwrap()) {
                break a;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", log.lock().unwrap());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus did not log its address (msg=\"Listening on\") within 30 s:\n{}",
                log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let p = Prometheus {
            child,
            addr,
            log,
            _dir: dir,
        };
        support::wait_for(
            "prometheus /-/ready",
            Duration::from_secs(30),
            || p.log(),
            || http_get(p.addr, "/-/ready").0 == 200,
        );
        p
    }

    fn log(&self) -> String {
        tail(&self.log.lock().unwrap())
    }

    /// An instant query: the samples, or the error Prometheus gave.
    fn query(&self, expr: &str) -> Result<Vec<Sample>, String> {
        let (code, body) = http_get(self.addr, &format!("/api/v1/query?query={}", encode(expr)));
        let v: Value = serde_json::from_str(&body)
            .map_err(|e| format!("HTTP {code}, not JSON ({e}): {body}"))?;
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        let data = &v["data"];
        let rows = match data["resultType"].as_str() {
            Some("vector") => data["result"].as_array().cloned().unwrap_or_default(),
            Some("scalar") => vec![serde_json::json!({"metric": {}, "value": data["result"]})],
            other => return Err(format!("result type {other:?}")),
        };
        Ok(rows
            .iter()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect();
                let value = r["value"][1]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(f64::NAN);
                (labels, value)
            })
            .collect())
    }

    /// The time of the latest scrape of tikban (Unix seconds).
    /// The time of the latest successful scrape of tikban (Unix seconds; 0 before one, or
    /// while the latest one failed). `timestamp()` of a plain selector is the sample's time; of
    /// any other expression it would be the evaluation time.
    fn last_scrape(&self) -> f64 {
        let first = |q: &str| self.query(q).ok().and_then(|s| s.first().map(|(_, v)| *v));
        match first("timestamp(up{job=\"tikban\"})") {
            Some(at) if first("up{job=\"tikban\"}") == Some(1.0) => at,
            _ => 0.0,
        }
    }

    /// Waits until a scrape that started after `at` (Unix seconds) succeeded: it saw the state
    /// tikban had at `at`.
    fn wait_for_scrape_after(&self, at: f64, t: &Tikban) {
        support::wait_for(
            "a scrape of tikban",
            WAIT,
            || format!("{}\ntikban:\n{}", self.log(), tail(&t.output())),
            || self.last_scrape() > at,
        );
    }

    /// Waits until `n` more scrapes happened (paces the long run).
    fn wait_scrapes(&self, n: u32, t: &Tikban) {
        let mut last = self.last_scrape();
        for _ in 0..n {
            self.wait_for_scrape_after(last, t);
            last = self.last_scrape();
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address of `msg="Listening on" address=127.0.0.1:PORT` in Prometheus's log.
fn listening_address(log: &str) -> Option<SocketAddr> {
    log.lines()
        .filter(|l| l.contains("msg=\"Listening on\""))
        .find_map(|l| {
            let rest = l.split_once(" address=")?.1;
            rest.split_whitespace().next()?.parse().ok()
        })
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// GET over HTTP/1.0 (no chunked encoding): `(status, body)`, `(0, "")` when unreachable.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

// === The picture ===

/// Runs `scripts/render-dashboard.py` over the run's data while Prometheus still holds it.
fn render(prom: &Prometheus, start: f64, end: f64, t: &Tikban, png: &Path) {
    let script = workspace().join("scripts/render-dashboard.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg("--prometheus")
        .arg(format!("http://{}", prom.addr))
        .arg("--dashboard")
        .arg(workspace().join(DASHBOARD))
        .arg("--instance")
        .arg(format!("127.0.0.1:{}", t.metrics_port))
        .arg("--start")
        .arg(format!("{start:.0}"))
        .arg("--end")
        .arg(format!("{end:.0}"))
        .arg("--rate-interval")
        .arg("10s")
        .arg("--out")
        .arg(png)
        .output()
        .unwrap_or_else(|e| panic!("run python3 {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed (it needs matplotlib: `python3 -m pip install 'matplotlib==3.10.3'`):\n{}{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(png.is_file(), "{} was not written", png.display());
}

// === The PromQL scanner ===

/// The metric families `docs/operations.md` documents, from its table (`| \`name\` | type |`).
fn documented_families() -> BTreeMap<String, String> {
    let path = workspace().join("docs/operations.md");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .filter_map(|l| {
            let mut cells = l.split('|').map(str::trim).skip(1);
            let name = cells.next()?.strip_prefix('`')?.strip_suffix('`')?;
            let kind = cells.next()?;
            name.starts_with("tikban_")
                .then(|| (name.to_owned(), kind.to_owned()))
        })
        .collect()
}

/// Without Prometheus: the dashboard names only documented metrics, and the name check catches
/// the renamed metric of the fixture (the end-to-end test repeats this against the real
/// `/metrics`).
#[test]
fn the_name_check_catches_a_renamed_metric() {
    let families = documented_families();
    assert!(
        families.len() >= 20
            && families
                .get("tikban_sync_batch_duration_seconds")
                .map(String::as_str)
                == Some("histogram"),
        "the metrics table of docs/operations.md did not parse: {families:?}"
    );
    let dashboard = load(DASHBOARD);
    assert_eq!(check_layout(&dashboard), Ok(()), "{DASHBOARD}");
    assert_eq!(
        check_metric_names(&dashboard, &families),
        Ok(()),
        "{DASHBOARD}"
    );

    let fixture = load(RENAMED_FIXTURE);
    let err = check_metric_names(&fixture, &families)
        .expect_err("a dashboard with a renamed metric must fail the name check");
    assert!(
        err.contains("tikban_router_entries_count") && err.contains("Router entries (renamed)"),
        "{err}"
    );
    // Only the renamed one: the fixture's other panel and its variable use real names.
    assert_eq!(err.lines().count(), 1, "{err}");

    // The same rename inside the real dashboard fails too (a histogram suffix included).
    let renamed = load(DASHBOARD).to_string().replace(
        "tikban_sync_batch_duration_seconds_bucket",
        "tikban_sync_batch_seconds_bucket",
    );
    let renamed: Value = serde_json::from_str(&renamed).expect("still JSON");
    let err = check_metric_names(&renamed, &families).expect_err("a renamed histogram must fail");
    assert!(
        err.contains("tikban_sync_batch_seconds_bucket") && err.contains("Batch duration"),
        "{err}"
    );
}

#[test]
fn metric_names_skip_functions_labels_strings_and_durations() {
    assert_eq!(
        metric_names(
            "histogram_quantile(0.95, sum by (le) (rate(tikban_sync_batch_duration_seconds_bucket{instance=\"$instance\", le!=\"rate(x)\"}[$__rate_interval])))"
        ),
        ["tikban_sync_batch_duration_seconds_bucket"]
    );
    assert_eq!(
        metric_names(
            "60 * sum by (service, outcome) (rate(tikban_guard_events_total{instance=~'a|b'}[5m] offset 1m))"
        ),
        ["tikban_guard_events_total"]
    );
    assert_eq!(
        metric_names(
            "sum(tikban_router_entries) by (ip_type) / ignoring(kind) group_left tikban_entry_budget and on (instance) up == bool 1"
        ),
        ["tikban_router_entries", "tikban_entry_budget", "up"]
    );
    assert_eq!(
        metric_names("count_values(\"v\", tikban_build_info) or vector(0) > Inf"),
        ["tikban_build_info"]
    );
    assert_eq!(
        metric_names("sum without(le)(x:recorded:rate5m)"),
        ["x:recorded:rate5m"]
    );
}

#[test]
fn variables_are_substituted_and_unknown_ones_refused() {
    let vars: BTreeMap<String, String> = [("instance", "127.0.0.1:9"), ("__rate_interval", "1m")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(
        substitute("rate(a{instance=\"$instance\"}[${__rate_interval}])", &vars).unwrap(),
        "rate(a{instance=\"127.0.0.1:9\"}[1m])"
    );
    assert!(
        substitute("a{x=\"$nope\"}", &vars)
            .unwrap_err()
            .contains("$nope")
    );
    assert_eq!(
        label_values_args("label_values(tikban_router_entries{instance=\"$instance\"}, ip_type)"),
        Some((
            "tikban_router_entries{instance=\"$instance\"}".to_owned(),
            "ip_type".to_owned()
        ))
    );
}
