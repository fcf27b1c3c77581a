//! The LAPI over HTTP(S): the bouncer's decision stream, the machine's
//! login and alert push. Blocking (ureq + rustls), like feed fetches: the
//! agent runs it on a blocking thread, never under its lock.

use std::{sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
use ureq::{
    Agent,
    config::AutoHeaderValue,
    tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig, TlsProvider},
};

use super::{
    decisions::{StreamBodyError, WireDecision, parse_stream_body},
    read_secret,
    spool::Alert,
};
use crate::config::CrowdsecConfig;

/// Longest stream body accepted: a full resync of a million decisions is
/// about 200 MB; anything bigger is a broken or hostile server.
const MAX_BODY: u64 = 256 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const TOTAL_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum LapiError {
    #[error("{0}")]
    Credential(String),
    #[error("{url} refused the {what} (HTTP {status}): {hint}")]
    Unauthorized {
        url: String,
        what: &'static str,
        status: u16,
        hint: &'static str,
    },
    #[error("{url} answered HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url} cannot be reached: {why}")]
    Transport { url: String, why: String },
    #[error("{url} sent a body that is not what the LAPI sends: {why}")]
    Body { url: String, why: String },
    #[error(
        "{url} sent more than {max} decisions in one page; refused whole (the decisions already applied stay): raise `max_decisions` in [crowdsec] if the LAPI really holds that many"
    )]
    TooManyDecisions { url: String, max: usize },
    #[error("{0}")]
    Tls(String),
}

impl LapiError {
    /// A credential problem: retrying soon will not fix it.
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            LapiError::Unauthorized { .. } | LapiError::Credential(_)
        )
    }
}

/// One answer of the decision stream.
#[derive(Debug)]
pub struct StreamPage {
    pub new: Vec<WireDecision>,
    pub deleted: Vec<WireDecision>,
    /// Bytes of the body, for the logs.
    pub bytes: usize,
}

/// A connection to one LAPI with the bouncer's (and, if set, the
/// machine's) credentials.
pub struct Lapi {
    http: Agent,
    base: String,
    /// `base` as errors and logs show it: a password or token in the
    /// URL becomes `***` (`redact::redact_url`).
    shown: String,
    api_key: Option<String>,
    max_decisions: usize,
}

impl Lapi {
    /// Reads the credentials and TLS files the config names. Errors name
    /// the file and what is wrong with it.
    pub fn new(cfg: &CrowdsecConfig) -> Result<Lapi, LapiError> {
        let api_key = match &cfg.api_key_file {
            Some(p) => Some(
                read_secret(p).map_err(|e| LapiError::Credential(format!("api_key_file: {e}")))?,
            ),
            None => None,
        };
        let mut tls = TlsConfig::builder().provider(TlsProvider::Rustls);
        if let Some(ca) = &cfg.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| LapiError::Tls(format!("ca_file {}: {e}", ca.display())))?;
            let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|i| match i {
                    Ok(PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(LapiError::Tls(format!(
                    "ca_file {} holds no PEM certificate",
                    ca.display()
                )));
            }
            tls = tls.root_certs(RootCerts::Specific(Arc::new(certs)));
        } else {
            tls = tls.root_certs(crate::feeds::fetch::root_certs());
        }
        if let (Some(cert), Some(key)) = (&cfg.cert_file, &cfg.key_file) {
            let cert_pem = std::fs::read(cert)
                .map_err(|e| LapiError::Tls(format!("cert_file {}: {e}", cert.display())))?;
            if let Err(e) = crate::config::check_secret_mode(key) {
                return Err(LapiError::Credential(format!("key_file: {e}")));
            }
            let key_pem = std::fs::read(key)
                .map_err(|e| LapiError::Tls(format!("key_file {}: {e}", key.display())))?;
            let chain: Vec<Certificate<'static>> = ureq::tls::parse_pem(&cert_pem)
                .filter_map(|i| match i {
                    Ok(PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if chain.is_empty() {
                return Err(LapiError::Tls(format!(
                    "cert_file {} holds no PEM certificate",
                    cert.display()
                )));
            }
            let key = PrivateKey::from_pem(&key_pem)
                .map_err(|e| LapiError::Tls(format!("key_file {}: {e}", key.display())))?;
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
        }
        let http: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .tls_config(tls.build())
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(TOTAL_TIMEOUT))
            .user_agent(AutoHeaderValue::Provided(Arc::new(format!(
                "shield/{}",
                env!("CARGO_PKG_VERSION")
            ))))
            .build()
            .into();
        let base = cfg.lapi_url.trim_end_matches('/').to_string();
        Ok(Lapi {
            http,
            shown: crate::redact::redact_url(&base),
            base,
            api_key,
            max_decisions: cfg.max_decisions,
        })
    }

    /// `GET /v1/decisions/stream`: everything in force (`startup`), or
    /// what changed since this bouncer's last pull.
    pub fn stream(
        &self,
        startup: bool,
        scopes: &str,
        origins: &str,
    ) -> Result<StreamPage, LapiError> {
        let mut url = format!("{}/v1/decisions/stream?startup={startup}", self.base);
        if !scopes.is_empty() {
            url.push_str(&format!("&scopes={scopes}"));
        }
        if !origins.is_empty() {
            url.push_str(&format!("&origins={origins}"));
        }
        let mut req = self.http.get(&url);
        if let Some(k) = &self.api_key {
            req = req.header("X-Api-Key", k.as_str());
        }
        let resp = req.call().map_err(|e| self.transport(e))?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let bytes = body
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(|e| self.transport(e))?;
        match status {
            200 => {}
            401 | 403 => {
                return Err(LapiError::Unauthorized {
                    url: self.shown.clone(),
                    what: "bouncer API key",
                    status,
                    hint: "check api_key_file against `cscli bouncers list` (a key is shown once, by `cscli bouncers add`)",
                });
            }
            _ => return Err(status_error(&self.shown, status, &bytes)),
        }
        let parsed = parse_stream_body(&bytes, self.max_decisions).map_err(|e| match e {
            StreamBodyError::TooMany { max } => LapiError::TooManyDecisions {
                url: self.shown.clone(),
                max,
            },
            StreamBodyError::Json(e) => LapiError::Body {
                url: self.shown.clone(),
                why: e.to_string(),
            },
        })?;
        Ok(StreamPage {
            new: parsed.new,
            deleted: parsed.deleted,
            bytes: bytes.len(),
        })
    }

    /// `POST /v1/watchers/login`: a JWT for pushing alerts.
    pub fn login(&self, machine_id: &str, password: &str) -> Result<String, LapiError> {
        #[derive(Serialize)]
        struct Login<'a> {
            machine_id: &'a str,
            password: &'a str,
            scenarios: [&'a str; 1],
        }
        #[derive(Deserialize)]
        struct Token {
            token: String,
        }
        let body = serde_json::to_vec(&Login {
            machine_id,
            password,
            scenarios: [super::SCENARIO],
        })
        .map_err(|e| LapiError::Body {
            url: self.shown.clone(),
            why: e.to_string(),
        })?;
        let (status, bytes) = self.post("/v1/watchers/login", None, &body)?;
        match status {
            200 => {}
            401 | 403 => {
                return Err(LapiError::Unauthorized {
                    url: self.shown.clone(),
                    what: "machine login",
                    status,
                    hint: "check machine_id and password_file against `cscli machines list` (the machine must be validated)",
                });
            }
            _ => return Err(status_error(&self.shown, status, &bytes)),
        }
        let t: Token = serde_json::from_slice(&bytes).map_err(|e| LapiError::Body {
            url: self.shown.clone(),
            why: e.to_string(),
        })?;
        Ok(t.token)
    }

    /// `POST /v1/alerts`: each alert with its decision.
    pub fn push_alerts(&self, token: &str, alerts: &[Alert]) -> Result<(), LapiError> {
        let wire: Vec<_> = alerts.iter().map(Alert::wire).collect();
        let body = serde_json::to_vec(&wire).map_err(|e| LapiError::Body {
            url: self.shown.clone(),
            why: e.to_string(),
        })?;
        let (status, bytes) = self.post("/v1/alerts", Some(token), &body)?;
        match status {
            200 | 201 => Ok(()),
            401 | 403 => Err(LapiError::Unauthorized {
                url: self.shown.clone(),
                what: "machine token",
                status,
                hint: "the login expired or was revoked; shield logs in again",
            }),
            _ => Err(status_error(&self.shown, status, &bytes)),
        }
    }

    fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), LapiError> {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/json");
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let resp = req.send(body).map_err(|e| self.transport(e))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .map_err(|e| self.transport(e))?;
        Ok((status, bytes))
    }
}

impl Lapi {
    fn transport(&self, e: ureq::Error) -> LapiError {
        LapiError::Transport {
            url: self.shown.clone(),
            // In case the HTTP client quotes the URL it was given.
            why: e.to_string().replace(&self.base, &self.shown),
        }
    }
}

fn status_error(base: &str, status: u16, body: &[u8]) -> LapiError {
    let text: String = String::from_utf8_lossy(body)
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    LapiError::Status {
        url: base.to_string(),
        status,
        body: text,
    }
}
