//! Reading the environment: [`RawEnv`] holds the text of every known variable, filled by
//! [`envy`] from the process environment or a list.

use std::ffi::OsString;

use secrecy::SecretString;
use serde::Deserialize;

use super::{Config, ConfigError, Problem, Var};

/// The text of every known variable, as [`envy`] finds it. Empty values count as unset: RouterOS
/// `/container/envs` entries are easy to leave empty. The secrets (`CROWDSEC_BOUNCER_API_KEY`,
/// `CROWDSEC_KEY_PEM`, `MIKROTIK_PASS`) are [`SecretString`]s, so `Debug` never prints them.
#[derive(Debug, Default, Deserialize)]
#[allow(missing_docs)]
pub struct RawEnv {
    pub crowdsec_url: Option<String>,
    pub crowdsec_bouncer_api_key: Option<SecretString>,
    pub crowdsec_update_frequency: Option<String>,
    pub crowdsec_poll_timeout: Option<String>,
    pub crowdsec_origins: Option<String>,
    pub crowdsec_scopes: Option<String>,
    pub crowdsec_decisions_types: Option<String>,
    pub crowdsec_scenarios_containing: Option<String>,
    pub crowdsec_scenarios_not_containing: Option<String>,
    pub crowdsec_lapi_metrics_interval: Option<String>,
    pub crowdsec_cert_path: Option<String>,
    pub crowdsec_key_path: Option<String>,
    pub crowdsec_ca_cert_path: Option<String>,
    pub crowdsec_cert_pem: Option<String>,
    pub crowdsec_key_pem: Option<SecretString>,
    pub crowdsec_ca_cert_pem: Option<String>,
    pub crowdsec_insecure_skip_verify: Option<String>,
    pub mikrotik_host: Option<String>,
    pub mikrotik_user: Option<String>,
    pub mikrotik_pass: Option<SecretString>,
    pub mikrotik_tls: Option<String>,
    pub mikrotik_tls_fingerprint: Option<String>,
    pub mikrotik_tls_ca: Option<String>,
    pub mikrotik_conn_timeout: Option<String>,
    pub mikrotik_cmd_timeout: Option<String>,
    pub mikrotik_pipeline_window: Option<String>,
    pub firewall_ipv4_enabled: Option<String>,
    pub firewall_ipv4_address_list: Option<String>,
    pub firewall_ipv6_enabled: Option<String>,
    pub firewall_ipv6_address_list: Option<String>,
    pub firewall_comment_prefix: Option<String>,
    pub reconciliation_interval: Option<String>,
    pub allowlist: Option<String>,
    pub protect_self: Option<String>,
    pub protect_router: Option<String>,
    pub protect_loopback: Option<String>,
    pub protect_link_local: Option<String>,
    pub protect_lapi: Option<String>,
    pub protect_admin_sessions: Option<String>,
    pub max_range_v4: Option<String>,
    pub max_range_v6: Option<String>,
    pub max_entries: Option<String>,
    pub ipv6_ban_prefix: Option<String>,
    pub guard_enabled: Option<String>,
    pub crowdsec_machine_id: Option<String>,
    pub crowdsec_machine_password: Option<SecretString>,
    /// Guard's thresholds (`crate::guard::VARS`), as given; not filled by envy.
    #[serde(skip)]
    pub guard: Vec<(&'static str, String)>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
    pub metrics_enabled: Option<String>,
    pub metrics_addr: Option<String>,
    pub metrics_port: Option<String>,
}

impl Config {
    /// Reads the process environment, as the OS gives it (`std::env::vars` would panic on a
    /// variable that is not UTF-8, even one tikban does not read).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars_os(std::env::vars_os())
    }

    /// Reads variables whose names and values may be any bytes. Names tikban does not read are
    /// ignored whatever their bytes; a value of one of its own that is not UTF-8 is a problem
    /// (named, never shown: it may be a secret).
    pub fn from_vars_os(
        vars: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<Self, ConfigError> {
        let mut known = Vec::new();
        let mut problems = Vec::new();
        for (name, value) in vars {
            let Some(var) = name.to_str().and_then(find_var) else {
                continue;
            };
            match value.into_string() {
                Ok(value) => known.push((var.name.to_owned(), value)),
                Err(_) => problems.push(Problem {
                    var: var.name,
                    message: "is not valid UTF-8; expected text".to_owned(),
                }),
            }
        }
        Self::from_known(known, problems)
    }

    /// Reads variables from `vars` (tests pass a list instead of the process environment).
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let known = vars.into_iter().filter(|(k, _)| find_var(k).is_some());
        Self::from_known(known, Vec::new())
    }

    fn from_known(
        known: impl IntoIterator<Item = (String, String)>,
        problems: Vec<Problem>,
    ) -> Result<Self, ConfigError> {
        // Only known names reach envy, so unknown variables cannot fail deserialisation, and
        // every field is a string, so envy itself cannot fail on a value.
        let (guard, known): (Vec<_>, Vec<_>) = known
            .into_iter()
            .partition(|(k, _)| crate::guard::VARS.iter().any(|g| g.name == k));
        let mut raw: RawEnv = envy::from_iter(known).unwrap_or_default();
        raw.guard = guard
            .into_iter()
            .filter_map(|(k, v)| {
                let name = crate::guard::VARS.iter().find(|g| g.name == k)?.name;
                let v = v.trim().to_owned();
                (!v.is_empty()).then_some((name, v))
            })
            .collect();
        Self::check(&raw, problems)
    }
}

fn find_var(name: &str) -> Option<Var> {
    super::all_vars().find(|v| v.name == name)
}
