//! Prometheus exporter-toolkit's web configuration file (`--web.config.file`), the file
//! node_exporter and the other official exporters read: TLS (`tls_server_config`), response
//! headers (`http_server_config.headers`) and basic auth (`basic_auth_users`, bcrypt hashes).
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt          # relative paths are relative to this file
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert
//!   client_ca_file: ca.crt
//!   min_version: TLS12
//! http_server_config:
//!   headers: {X-Content-Type-Options: nosniff}
//! basic_auth_users:
//!   prometheus: $2y$10$...           # bcrypt hash
//! ```
//!
//! Key names and semantics follow exporter-toolkit's `web/tls_config.go` and `web/handler.go`:
//! unknown keys are errors; TLS is on when any TLS key is set; `client_auth_type` is one of
//! `NoClientCert` (default), `RequestClientCert`, `RequireAnyClientCert` (alias
//! `RequireClientCert`), `VerifyClientCertIfGiven`, `RequireAndVerifyClientCert`; client CAs
//! without a client auth type are an error; only the five security headers exporter-toolkit
//! allows can be set. The file and every file it names are re-read when they change (checked
//! on each connection and each request, by `stat`): certificate rotation needs no restart. A
//! file that stops being valid fails closed, like exporter-toolkit: handshakes fail and
//! requests get 500 until it is fixed, with the error logged once per change.
//!
//! Differences, because vpslens uses rustls rather than Go's crypto/tls: TLS 1.0/1.1 do not
//! exist (a `min_version` below `TLS12` serves TLS 1.2 and up, with a warning); `cipher_suites`
//! names rustls' ECDHE/AEAD TLS 1.2 suites (others are errors; TLS 1.3 suites are always on,
//! as in Go); `curve_preferences` knows `X25519`, `CurveP256`, `CurveP384`; `VerifyClientCertIfGiven`
//! and `RequireAndVerifyClientCert` need `client_ca_file`/`client_ca` (Go would fall back to the
//! system roots); `client_allowed_sans` matches DNS names and IP addresses (via rustls-webpki);
//! `http_server_config.http2` is accepted and ignored (vpslens serves HTTP/1.1);
//! `rate_limit` is an error (not supported).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderName, HeaderValue};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig};
use serde::Deserialize;
use thiserror::Error;

/// Errors reading or validating a web configuration file.
#[derive(Debug, Error)]
pub enum WebConfigError {
    /// The file (or a file it names) could not be read.
    #[error("web config: cannot read {path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// YAML syntax, an unknown key or a value of the wrong type.
    #[error("web config {path}: {message}")]
    Syntax {
        /// Path.
        path: PathBuf,
        /// Parser message (names the key).
        message: String,
    },
    /// A value is not acceptable.
    #[error("web config {path}: {message}")]
    Invalid {
        /// Path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The file as written (exporter-toolkit's `Config`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    tls_server_config: RawTls,
    #[serde(default)]
    http_server_config: RawHttp,
    #[serde(default)]
    rate_limit: Option<serde_norway::Value>,
    #[serde(default)]
    basic_auth_users: Option<BTreeMap<String, String>>,
}

/// `tls_server_config` (exporter-toolkit's `TLSConfig`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    #[serde(default)]
    cipher_suites: Vec<String>,
    #[serde(default)]
    curve_preferences: Vec<String>,
    min_version: Option<String>,
    max_version: Option<String>,
    prefer_server_cipher_suites: Option<bool>,
    client_allowed_sans: Option<Vec<String>>,
}

impl RawTls {
    /// exporter-toolkit's `IsEnabled`: any TLS key set.
    fn is_enabled(&self) -> bool {
        self.cert.is_some()
            || self.key.is_some()
            || self.cert_file.is_some()
            || self.key_file.is_some()
            || self.client_ca.is_some()
            || self.client_ca_file.is_some()
            || self.client_auth_type.is_some()
    }
}

/// `http_server_config`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    /// Accepted for compatibility; vpslens serves HTTP/1.1 only.
    #[allow(dead_code)]
    http2: Option<bool>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// exporter-toolkit's `extraHTTPHeaders`: the only headers that may be set, and the values
/// allowed for the enumerated ones (empty = any value).
const ALLOWED_HEADERS: [(&str, &[&str]); 5] = [
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// A bcrypt hash of "fakepassword", compared against when the user does not exist, so the
/// answer takes as long as for a real user (exporter-toolkit does the same).
pub const DUMMY_HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";

/// A validated web configuration, ready to serve.
#[derive(Debug)]
pub struct WebSettings {
    /// The rustls server config when TLS is on (ALPN `http/1.1`).
    pub tls: Option<Arc<ServerConfig>>,
    /// Response headers from `http_server_config.headers`.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `basic_auth_users`: user → bcrypt hash. Empty = no authentication.
    pub users: BTreeMap<String, String>,
}

/// Identity of a file's current version: (device, inode, size, mtime in ns). `None` if absent.
type Stamp = Option<(u64, u64, u64, i128)>;

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| {
        (
            m.dev(),
            m.ino(),
            m.size(),
            i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        )
    })
}

struct Cached {
    /// The config file and every file it named, with their stamps when read.
    stamps: Vec<(PathBuf, Stamp)>,
    value: Result<Arc<WebSettings>, Arc<str>>,
}

/// The web config file, re-read when it or a file it names changes.
pub struct WebConfigHandle {
    path: PathBuf,
    cached: Mutex<Cached>,
}

impl std::fmt::Debug for WebConfigHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfigHandle")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl WebConfigHandle {
    /// Reads and validates `path` (start-up: errors stop the daemon).
    ///
    /// # Errors
    /// [`WebConfigError`] for an unreadable file, an unknown key, a bad value, a certificate or
    /// key that does not parse or match, or a bcrypt hash that is not one.
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let (stamps, value) = read(path);
        let value = value?;
        Ok(Self {
            path: path.to_path_buf(),
            cached: Mutex::new(Cached {
                stamps,
                value: Ok(Arc::new(value)),
            }),
        })
    }

    /// The config file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current settings: re-read if the file or a file it names changed since the last
    /// call. `Err` (the message, logged once per change) while the file is invalid.
    ///
    /// # Errors
    /// The current version of the file is invalid.
    pub fn current(&self) -> Result<Arc<WebSettings>, Arc<str>> {
        let mut c = match self.cached.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        if c.stamps.iter().all(|(p, s)| stamp(p) == *s) {
            return c.value.clone();
        }
        let (stamps, value) = read(&self.path);
        c.stamps = stamps;
        c.value = match value {
            Ok(v) => {
                tracing::info!(path = %self.path.display(), tls = v.tls.is_some(), users = v.users.len(), "web config reloaded");
                Ok(Arc::new(v))
            }
            Err(e) => {
                tracing::error!("{e}; refusing connections and requests until it is fixed");
                Err(e.to_string().into())
            }
        };
        c.value.clone()
    }
}

/// Reads the file; returns the stamps of what was read (so a fix is noticed) and the result.
fn read(path: &Path) -> (Vec<(PathBuf, Stamp)>, Result<WebSettings, WebConfigError>) {
    let mut stamps = vec![(path.to_path_buf(), stamp(path))];
    let r = parse(path, &mut stamps);
    (stamps, r)
}

fn invalid(path: &Path, message: impl Into<String>) -> WebConfigError {
    WebConfigError::Invalid {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn parse(path: &Path, stamps: &mut Vec<(PathBuf, Stamp)>) -> Result<WebSettings, WebConfigError> {
    let bytes = std::fs::read(path).map_err(|source| WebConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    // An empty file is an empty config (as in Go's yaml).
    let raw: RawFile = if bytes.iter().all(u8::is_ascii_whitespace) {
        RawFile::default()
    } else {
        serde_norway::from_slice(&bytes).map_err(|e| WebConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?
    };
    if raw.rate_limit.is_some() {
        return Err(invalid(path, "rate_limit is not supported by vpslens"));
    }
    let mut headers = Vec::new();
    for (k, v) in &raw.http_server_config.headers {
        let Some((_, allowed)) = ALLOWED_HEADERS.iter().find(|(n, _)| n == k) else {
            return Err(invalid(
                path,
                format!("HTTP header {k:?} can not be configured"),
            ));
        };
        if !allowed.is_empty() && !allowed.contains(&v.as_str()) {
            return Err(invalid(
                path,
                format!("invalid value for {k}. Expected one of: {allowed:?}, but got: {v:?}"),
            ));
        }
        let name =
            HeaderName::from_bytes(k.as_bytes()).map_err(|e| invalid(path, e.to_string()))?;
        let value = HeaderValue::from_str(v).map_err(|e| invalid(path, format!("{k}: {e}")))?;
        headers.push((name, value));
    }
    let users = raw.basic_auth_users.unwrap_or_default();
    for (u, h) in &users {
        if h.parse::<bcrypt::HashParts>().is_err() {
            return Err(invalid(
                path,
                format!("basic_auth_users.{u}: not a bcrypt hash"),
            ));
        }
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let tls = if raw.tls_server_config.is_enabled() {
        Some(Arc::new(tls_config(
            path,
            dir,
            &raw.tls_server_config,
            stamps,
        )?))
    } else {
        None
    };
    Ok(WebSettings {
        tls,
        headers,
        users,
    })
}

/// Reads `file` (relative to the config's directory) or takes the inline text.
fn material(
    cfg: &Path,
    dir: &Path,
    file: Option<&Path>,
    inline: Option<&str>,
    stamps: &mut Vec<(PathBuf, Stamp)>,
) -> Result<Option<Vec<u8>>, WebConfigError> {
    match (file, inline) {
        (Some(f), _) => {
            let p = dir.join(f);
            stamps.push((p.clone(), stamp(&p)));
            std::fs::read(&p)
                .map(Some)
                .map_err(|source| WebConfigError::Io { path: p, source })
        }
        (None, Some(text)) => Ok(Some(text.as_bytes().to_vec())),
        (None, None) => {
            let _ = cfg;
            Ok(None)
        }
    }
}

fn tls_version(cfg: &Path, v: Option<&str>, default: u8) -> Result<u8, WebConfigError> {
    match v {
        None => Ok(default),
        Some("TLS10") => Ok(10),
        Some("TLS11") => Ok(11),
        Some("TLS12") => Ok(12),
        Some("TLS13") => Ok(13),
        Some(o) => Err(invalid(cfg, format!("unknown TLS version: {o}"))),
    }
}

fn tls_config(
    cfg: &Path,
    dir: &Path,
    t: &RawTls,
    stamps: &mut Vec<(PathBuf, Stamp)>,
) -> Result<ServerConfig, WebConfigError> {
    let cert_pem = material(cfg, dir, t.cert_file.as_deref(), t.cert.as_deref(), stamps)?
        .ok_or_else(|| invalid(cfg, "missing one of cert or cert_file"))?;
    let key_pem = material(cfg, dir, t.key_file.as_deref(), t.key.as_deref(), stamps)?
        .ok_or_else(|| invalid(cfg, "missing one of key or key_file"))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(cfg, format!("cert: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(cfg, "cert: no PEM certificate found"));
    }
    let key =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| invalid(cfg, format!("key: {e}")))?;

    let mut provider = rustls::crypto::ring::default_provider();
    if !t.cipher_suites.is_empty() {
        let mut chosen = Vec::new();
        for name in &t.cipher_suites {
            let Some(s) = provider
                .cipher_suites
                .iter()
                .find(|s| s.tls13().is_none() && format!("{:?}", s.suite()) == *name)
            else {
                let known: Vec<String> = provider
                    .cipher_suites
                    .iter()
                    .filter(|s| s.tls13().is_none())
                    .map(|s| format!("{:?}", s.suite()))
                    .collect();
                return Err(invalid(
                    cfg,
                    format!("unknown cipher: {name} (supported: {})", known.join(", ")),
                ));
            };
            chosen.push(*s);
        }
        // As in Go, cipher_suites only restricts TLS 1.2; TLS 1.3 suites stay on.
        let tls13: Vec<_> = provider
            .cipher_suites
            .iter()
            .filter(|s| s.tls13().is_some())
            .copied()
            .collect();
        provider.cipher_suites = tls13.into_iter().chain(chosen).collect();
    }
    if !t.curve_preferences.is_empty() {
        let mut groups = Vec::new();
        for c in &t.curve_preferences {
            let want = match c.as_str() {
                "X25519" => rustls::NamedGroup::X25519,
                "CurveP256" => rustls::NamedGroup::secp256r1,
                "CurveP384" => rustls::NamedGroup::secp384r1,
                "CurveP521" => {
                    return Err(invalid(cfg, "curve CurveP521 is not supported by rustls"))
                }
                o => return Err(invalid(cfg, format!("unknown curve: {o}"))),
            };
            if let Some(g) = provider.kx_groups.iter().find(|g| g.name() == want) {
                groups.push(*g);
            }
        }
        provider.kx_groups = groups;
    }
    let min = tls_version(cfg, t.min_version.as_deref(), 12)?;
    let max = tls_version(cfg, t.max_version.as_deref(), 13)?;
    if min < 12 {
        tracing::warn!(
            "web config {}: min_version below TLS12 has no effect: rustls speaks TLS 1.2 and 1.3",
            cfg.display()
        );
    }
    let mut versions = Vec::new();
    if min <= 12 && max >= 12 {
        versions.push(&rustls::version::TLS12);
    }
    if max >= 13 && min <= 13 {
        versions.push(&rustls::version::TLS13);
    }
    if versions.is_empty() {
        return Err(invalid(
            cfg,
            "min_version/max_version leave no TLS version rustls supports (TLS12, TLS13)",
        ));
    }

    let ca_pem = material(
        cfg,
        dir,
        t.client_ca_file.as_deref(),
        t.client_ca.as_deref(),
        stamps,
    )?;
    let provider = Arc::new(provider);
    let auth = t.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let roots = match &ca_pem {
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(pem) {
                let c = c.map_err(|e| invalid(cfg, format!("client_ca: {e}")))?;
                roots
                    .add(c)
                    .map_err(|e| invalid(cfg, format!("client_ca: {e}")))?;
            }
            if roots.is_empty() {
                return Err(invalid(cfg, "client_ca: no PEM certificate found"));
            }
            Some(Arc::new(roots))
        }
        None => None,
    };
    let verified = |optional: bool| -> Result<Arc<dyn ClientCertVerifier>, WebConfigError> {
        let roots = roots.clone().ok_or_else(|| {
            invalid(
                cfg,
                format!("client_auth_type {auth} needs client_ca_file or client_ca"),
            )
        })?;
        let b = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
        let b = if optional {
            b.allow_unauthenticated()
        } else {
            b
        };
        b.build()
            .map_err(|e| invalid(cfg, format!("client_ca: {e}")))
    };
    let verifier: Option<Arc<dyn ClientCertVerifier>> = match auth {
        "NoClientCert" | "" => {
            if roots.is_some() {
                return Err(invalid(
                    cfg,
                    "client CA's have been configured without a Client Auth Policy",
                ));
            }
            None
        }
        "RequestClientCert" => Some(Arc::new(AnyClientCert::new(false, &provider))),
        "RequireAnyClientCert" | "RequireClientCert" => {
            Some(Arc::new(AnyClientCert::new(true, &provider)))
        }
        "VerifyClientCertIfGiven" => Some(verified(true)?),
        "RequireAndVerifyClientCert" => Some(verified(false)?),
        o => return Err(invalid(cfg, format!("invalid ClientAuth: {o}"))),
    };
    let verifier = match (&t.client_allowed_sans, verifier) {
        (Some(sans), Some(inner)) => {
            let mut names = Vec::new();
            for s in sans {
                names.push(ServerName::try_from(s.clone()).map_err(|_| {
                    invalid(
                        cfg,
                        format!("client_allowed_sans: {s:?} is not a DNS name or IP address (the only SAN kinds vpslens matches)"),
                    )
                })?);
            }
            Some(Arc::new(AllowedSans { inner, names }) as Arc<dyn ClientCertVerifier>)
        }
        (Some(_), None) => {
            return Err(invalid(
                cfg,
                "client_allowed_sans needs a client_auth_type that asks for a certificate",
            ))
        }
        (None, v) => v,
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| invalid(cfg, e.to_string()))?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut sc = builder
        .with_single_cert(certs, key)
        .map_err(|e| invalid(cfg, format!("cert/key: {e}")))?;
    sc.ignore_client_order = t.prefer_server_cipher_suites.unwrap_or(true);
    sc.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(sc)
}

/// `RequestClientCert` / `RequireAnyClientCert`: asks for a certificate and checks the
/// handshake signature (possession of the key) but not the chain, like Go's.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    algs: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl AnyClientCert {
    fn new(mandatory: bool, provider: &CryptoProvider) -> Self {
        Self {
            mandatory,
            algs: provider.signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// `client_allowed_sans`: the inner verifier, then one of the names must be a SAN of the
/// client certificate.
#[derive(Debug)]
struct AllowedSans {
    inner: Arc<dyn ClientCertVerifier>,
    names: Vec<ServerName<'static>>,
}

impl ClientCertVerifier for AllowedSans {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| rustls::Error::General(format!("client certificate: {e}")))?;
        if self
            .names
            .iter()
            .any(|n| cert.verify_is_valid_for_subject_name(n).is_ok())
        {
            Ok(ok)
        } else {
            Err(rustls::Error::General(
                "could not find allowed SANs in client cert".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory with `server.pem`/`server.key` (self-signed, rcgen) and `web.yml` = `yaml`.
    fn load(yaml: &str) -> (tempfile::TempDir, Result<WebSettings, WebConfigError>) {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.path().join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), key.serialize_pem()).unwrap();
        let p = dir.path().join("web.yml");
        std::fs::write(&p, yaml).unwrap();
        let r = read(&p).1;
        (dir, r)
    }

    fn err(yaml: &str) -> String {
        match load(yaml).1 {
            Ok(_) => panic!("accepted: {yaml}"),
            Err(e) => e.to_string(),
        }
    }

    const TLS: &str = "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n";

    #[test]
    fn empty_file_is_plain_http_without_auth() {
        let s = load("").1.unwrap();
        assert!(s.tls.is_none() && s.users.is_empty() && s.headers.is_empty());
        let s = load("basic_auth_users:\n").1.unwrap();
        assert!(s.users.is_empty());
    }

    #[test]
    fn relative_paths_are_relative_to_the_file_and_tls_turns_on() {
        let s = load(TLS).1.unwrap();
        let tls = s.tls.unwrap();
        assert_eq!(tls.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(
            tls.ignore_client_order,
            "prefer_server_cipher_suites defaults to true"
        );
    }

    #[test]
    fn unknown_keys_and_unsupported_settings_are_errors() {
        assert!(err("tls_server_config: {cert_flie: x}\n").contains("cert_flie"));
        assert!(err("basic_auth_user: {}\n").contains("basic_auth_user"));
        assert!(err("http_server_config: {header: {}}\n").contains("header"));
        assert!(err("rate_limit: {burst: 1, interval: 1s}\n").contains("rate_limit"));
        assert!(err("tls_server_config: {key_file: server.key}\n").contains("cert_file"));
        assert!(
            err("tls_server_config: {cert_file: nope.pem, key_file: server.key}\n")
                .contains("nope.pem")
        );
    }

    #[test]
    fn headers_follow_exporter_toolkit_rules() {
        let s = load("http_server_config:\n  headers:\n    X-Frame-Options: deny\n    Strict-Transport-Security: max-age=31536000\n").1.unwrap();
        assert_eq!(s.headers.len(), 2);
        assert!(
            err("http_server_config: {headers: {X-Frame-Options: allow}}\n")
                .contains("X-Frame-Options")
        );
        assert!(err("http_server_config: {headers: {Server: vpslens}}\n")
            .contains("can not be configured"));
        // Accepted for compatibility (vpslens serves HTTP/1.1).
        assert!(load("http_server_config: {http2: false}\n").1.is_ok());
    }

    #[test]
    fn basic_auth_users_must_be_bcrypt_hashes() {
        let h = bcrypt::hash("pw", 4).unwrap();
        let s = load(&format!("basic_auth_users: {{prom: '{h}'}}\n"))
            .1
            .unwrap();
        assert_eq!(s.users["prom"], h);
        assert!(err("basic_auth_users: {prom: plaintext}\n").contains("not a bcrypt hash"));
        assert!(DUMMY_HASH.parse::<bcrypt::HashParts>().is_ok());
    }

    #[test]
    fn client_auth_rules_match_exporter_toolkit() {
        let e = err(&format!("{TLS}  client_ca_file: server.pem\n"));
        assert!(e.contains("without a Client Auth Policy"), "{e}");
        let e = err(&format!(
            "{TLS}  client_auth_type: RequireAndVerifyClientCert\n"
        ));
        assert!(e.contains("needs client_ca_file"), "{e}");
        assert!(
            err(&format!("{TLS}  client_auth_type: Sometimes\n")).contains("invalid ClientAuth")
        );
        for ok in [
            "RequestClientCert",
            "RequireAnyClientCert",
            "RequireClientCert",
            "NoClientCert",
        ] {
            assert!(
                load(&format!("{TLS}  client_auth_type: {ok}\n")).1.is_ok(),
                "{ok}"
            );
        }
        for ok in ["VerifyClientCertIfGiven", "RequireAndVerifyClientCert"] {
            let y = format!("{TLS}  client_auth_type: {ok}\n  client_ca_file: server.pem\n  client_allowed_sans: [prometheus.example, 10.0.0.1]\n");
            assert!(load(&y).1.is_ok(), "{ok}");
        }
        let e = err(&format!("{TLS}  client_auth_type: RequireAnyClientCert\n  client_allowed_sans: ['a@b.example']\n"));
        assert!(e.contains("client_allowed_sans"), "{e}");
    }

    #[test]
    fn versions_ciphers_and_curves_map_to_rustls() {
        assert!(load(&format!("{TLS}  min_version: TLS13\n")).1.is_ok());
        assert!(load(&format!("{TLS}  min_version: TLS10\n")).1.is_ok());
        assert!(err(&format!("{TLS}  max_version: TLS11\n")).contains("no TLS version"));
        assert!(err(&format!("{TLS}  min_version: SSL3\n")).contains("unknown TLS version"));
        let s = load(&format!(
            "{TLS}  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\n  curve_preferences: [X25519, CurveP256]\n  prefer_server_cipher_suites: false\n"
        ))
        .1
        .unwrap();
        let tls = s.tls.unwrap();
        assert!(!tls.ignore_client_order);
        let e = err(&format!(
            "{TLS}  cipher_suites: [TLS_RSA_WITH_AES_128_CBC_SHA]\n"
        ));
        assert!(
            e.contains("unknown cipher") && e.contains("supported:"),
            "{e}"
        );
        assert!(err(&format!("{TLS}  curve_preferences: [CurveP521]\n")).contains("CurveP521"));
    }

    #[test]
    fn a_change_is_picked_up_and_an_invalid_file_fails_closed() {
        let (dir, _) = load("");
        let p = dir.path().join("web.yml");
        let h = WebConfigHandle::load(&p).unwrap();
        assert!(h.current().unwrap().users.is_empty());
        std::fs::write(&p, "basic_auth_users: {a: nope}\n").unwrap();
        assert!(h.current().is_err());
        let hash = bcrypt::hash("pw", 4).unwrap();
        std::fs::write(&p, format!("basic_auth_users: {{a: '{hash}'}}\n")).unwrap();
        assert_eq!(h.current().unwrap().users.len(), 1);
        // Unchanged file: the same settings, not a re-read.
        assert!(Arc::ptr_eq(&h.current().unwrap(), &h.current().unwrap()));
    }

    #[test]
    fn a_rotated_certificate_is_picked_up_without_touching_the_config() {
        let (dir, r) = load(TLS);
        assert!(r.is_ok());
        let h = WebConfigHandle::load(&dir.path().join("web.yml")).unwrap();
        let before = h.current().unwrap();
        assert!(Arc::ptr_eq(&before, &h.current().unwrap()));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["rotated.example".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        // Key first, then certificate (as cert-manager's Secret update lands): in between the
        // pair does not match and the config fails closed.
        std::fs::write(dir.path().join("server.key"), key.serialize_pem()).unwrap();
        let mismatch = h.current();
        std::fs::write(dir.path().join("server.pem"), cert.pem()).unwrap();
        let after = h.current().unwrap();
        assert!(!Arc::ptr_eq(&before, &after));
        assert!(after.tls.is_some());
        assert!(
            mismatch.is_err(),
            "a key that does not match the certificate is refused"
        );
    }
}
