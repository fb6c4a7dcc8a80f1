//! `routeros-scripts/tikban-setup.rsc` agrees with the daemon and with `docs/configuration.md`:
//! every env var it sets is one tikban accepts and documents, its defaults are the documented
//! defaults, and every parameter is commented. `tikban-app-prep.rsc` has the same parameter
//! block; `tests/rsc_schema.rs` compares it with the app it prepares for.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use tikban::config::VARS;

const SETUP: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../routeros-scripts/tikban-setup.rsc"
);
const APP_PREP: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../routeros-scripts/tikban-app-prep.rsc"
);
const CONFIG_DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// One `:local name value` line of the parameter block.
#[derive(Debug)]
struct Param {
    value: String,
    commented: bool,
}

/// The parameter block: the `:local` lines between `# ==== parameters` and the next `# ====`.
fn params(script: &str) -> BTreeMap<String, Param> {
    let block: Vec<&str> = script
        .lines()
        .skip_while(|l| !l.starts_with("# ==== parameters"))
        .skip(1)
        .take_while(|l| !l.starts_with("# ===="))
        .collect();
    assert!(!block.is_empty(), "no `# ==== parameters` block");
    let mut out = BTreeMap::new();
    for (i, line) in block.iter().enumerate() {
        let Some(rest) = line.strip_prefix(":local ") else {
            assert!(
                line.is_empty() || line.starts_with('#'),
                "parameter block holds a non-parameter line: {line:?}"
            );
            continue;
        };
        let (name, value) = rest.split_once(' ').expect("`:local name value`");
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        // A comment may describe a group of consecutive parameters.
        let commented = block[..i]
            .iter()
            .rev()
            .find(|l| !l.starts_with(":local "))
            .is_some_and(|l| l.starts_with('#'));
        out.insert(
            name.to_owned(),
            Param {
                value: value.to_owned(),
                commented,
            },
        );
    }
    out
}

/// `:set ($envs->"NAME") EXPR` lines: env var name → expression.
fn envs(script: &str) -> BTreeMap<String, String> {
    script
        .lines()
        .filter_map(|l| l.trim().strip_prefix(":set ($envs->\""))
        .map(|l| {
            let (name, expr) = l.split_once("\")").expect("`:set ($envs->\"NAME\") EXPR`");
            (name.to_owned(), expr.trim().to_owned())
        })
        .collect()
}

/// `docs/configuration.md` rows: name → default cell (without backticks; `None` when there is
/// no backticked default).
fn documented_defaults() -> BTreeMap<String, Option<String>> {
    read(CONFIG_DOC)
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| {
            let (name, rest) = l.split_once('`')?;
            let default = rest.split('|').nth(1)?.trim();
            let default = default
                .strip_prefix('`')
                .and_then(|d| d.strip_suffix('`'))
                .map(str::to_owned);
            Some((name.to_owned(), default))
        })
        .collect()
}

#[test]
fn every_env_var_the_script_sets_is_accepted_and_documented() {
    let docs = documented_defaults();
    let set = envs(&read(SETUP));
    assert!(set.len() >= 5, "found only {set:?}");
    for name in set.keys() {
        assert!(
            VARS.iter().any(|v| v.name == name),
            "tikban-setup.rsc sets {name}, which the daemon does not accept"
        );
        assert!(
            docs.contains_key(name),
            "tikban-setup.rsc sets {name}, which docs/configuration.md does not document"
        );
    }
}

#[test]
fn script_sets_what_the_daemon_requires() {
    let docs = read(CONFIG_DOC);
    let set = envs(&read(SETUP));
    let required: Vec<&str> = VARS
        .iter()
        .map(|v| v.name)
        .filter(|name| {
            docs.lines()
                .find(|l| l.starts_with(&format!("| `{name}`")))
                .is_some_and(|l| l.contains("(required)"))
        })
        .collect();
    assert!(required.contains(&"CROWDSEC_URL"), "{required:?}");
    for name in required.iter().chain(&["CROWDSEC_BOUNCER_API_KEY"]) {
        assert!(
            set.contains_key(*name),
            "tikban-setup.rsc does not set {name}"
        );
    }
}

#[test]
fn parameter_defaults_match_documented_defaults() {
    let script = read(SETUP);
    let params = params(&script);
    let docs = documented_defaults();
    let mut checked = 0;
    for (name, expr) in envs(&script) {
        // Only a parameter passed straight through can be compared with the documented default.
        let Some(param) = expr.strip_prefix('$').and_then(|p| params.get(p)) else {
            continue;
        };
        if let Some(Some(default)) = docs.get(&name) {
            assert_eq!(
                &param.value, default,
                "{expr} defaults to {:?} but docs/configuration.md says {name} defaults to {default:?}",
                param.value
            );
            checked += 1;
        }
    }
    assert!(checked >= 3, "compared only {checked} defaults");

    // MIKROTIK_HOST is built from the gateway: its documented default is that address.
    assert_eq!(
        envs(&script)["MIKROTIK_HOST"],
        r#"($gatewayIp . ":" . $apiPort)"#
    );
    assert_eq!(
        docs["MIKROTIK_HOST"].as_deref(),
        Some(params["gatewayIp"].value.as_str())
    );
}

#[test]
fn secrets_and_the_lapi_url_are_placeholders_the_script_refuses() {
    let script = read(SETUP);
    let params = params(&script);
    let set = envs(&script);
    let mut placeholders: Vec<&str> = params
        .iter()
        .filter(|(_, p)| p.value == "CHANGE-ME")
        .map(|(n, _)| n.as_str())
        .collect();
    placeholders.sort();
    assert_eq!(placeholders, ["apiPassword", "lapiKey", "lapiUrl"]);
    for v in VARS.iter().filter(|v| v.secret) {
        if let Some(expr) = set.get(v.name) {
            let param = expr.trim_start_matches('$');
            assert!(
                placeholders.contains(&param),
                "secret {} comes from {expr}, which is not a CHANGE-ME parameter",
                v.name
            );
        }
    }
    for p in &placeholders {
        assert!(
            script.contains(&format!("(${p} = \"CHANGE-ME\")")),
            "the script does not refuse an unchanged {p}"
        );
    }
}

#[test]
fn every_parameter_is_commented() {
    let params = params(&read(SETUP));
    for required in [
        "containerSubnet",
        "containerIp",
        "gatewayIp",
        "lapiUrl",
        "lapiKey",
        "apiPassword",
        "listV4",
        "listV6",
        "tarFile",
        "rootDir",
    ] {
        assert!(params.contains_key(required), "no parameter {required}");
    }
    for (name, p) in &params {
        assert!(p.commented, "parameter {name} has no comment above it");
    }
}

#[test]
fn container_addresses_lie_in_the_container_subnet() {
    let params = params(&read(SETUP));
    let (net, len) = params["containerSubnet"]
        .value
        .split_once('/')
        .expect("subnet/len");
    let net: Ipv4Addr = net.parse().unwrap();
    let len: u32 = len.parse().unwrap();
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    for name in ["containerIp", "gatewayIp"] {
        let ip: Ipv4Addr = params[name].value.parse().unwrap();
        assert_eq!(
            u32::from(ip) & mask,
            u32::from(net),
            "{name} {ip} is outside {net}/{len}"
        );
    }
}

#[test]
fn app_prep_parameters_are_commented_and_its_password_is_a_refused_placeholder() {
    let script = read(APP_PREP);
    let prep = params(&script);
    for required in [
        "apiPassword",
        "apiUser",
        "apiPort",
        "listV4",
        "listV6",
        "containerIp",
    ] {
        assert!(prep.contains_key(required), "no parameter {required}");
    }
    for (name, p) in &prep {
        assert!(p.commented, "parameter {name} has no comment above it");
    }
    assert_eq!(prep["apiPassword"].value, "CHANGE-ME");
    assert!(
        script.contains(r#"($apiPassword = "CHANGE-ME")"#),
        "tikban-app-prep.rsc does not refuse an unchanged apiPassword"
    );
    // The same defaults as the setup script, so both paths fill the same lists.
    let setup = params(&read(SETUP));
    for name in ["apiUser", "apiPort", "listV4", "listV6"] {
        assert_eq!(prep[name].value, setup[name].value, "{name}");
    }
}
