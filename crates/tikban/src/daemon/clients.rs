//! Client settings from the configuration: what the LAPI and router clients are built with.

use crowdsec_lapi::LapiConfig;
use routeros_client::ClientConfig;

use crate::config::{Config, RouterTls};

/// The LAPI client settings from the configuration.
pub fn lapi_config(config: &Config) -> LapiConfig {
    let l = &config.lapi;
    let mut c = LapiConfig::new(l.url.clone());
    c.api_key = l.api_key.clone();
    c.client_cert = l.client_cert.clone();
    c.ca_certs = l.ca.clone();
    c.insecure_skip_verify = l.insecure_skip_verify;
    c.scopes = l.scopes.clone();
    c.origins = l.origins.clone();
    c.scenarios_containing = l.scenarios_containing.clone();
    c.scenarios_not_containing = l.scenarios_not_containing.clone();
    c.decision_types = l.decision_types.clone();
    c.version = env!("CARGO_PKG_VERSION").to_owned();
    c
}

/// The router client settings from the configuration.
pub fn router_config(config: &Config) -> ClientConfig {
    let r = &config.router;
    let mut c = ClientConfig::new(r.host.clone(), r.user.clone(), r.password.clone());
    c.port = r.port;
    c.connect_timeout = r.connect_timeout;
    c.command_timeout = r.command_timeout;
    c.window = r.window;
    c.tls = r.tls.as_ref().map(|t| {
        routeros_client::TlsConfig::new(match t {
            RouterTls::Fingerprint(fp) => routeros_client::TlsTrust::Fingerprint(*fp),
            RouterTls::Ca(certs) => routeros_client::TlsTrust::Ca(certs.clone()),
        })
    });
    c
}
