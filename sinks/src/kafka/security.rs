//! TLS and SASL to the brokers: the `tls:` and `sasl:` options of the Kafka sink (and of
//! `sluice audit`), the librdkafka settings they stand for, and the checks that refuse a
//! password sent in clear.

use std::path::{Path, PathBuf};

use rdkafka::ClientConfig;
use serde::Deserialize;
use sluice_channels::Secret;
use sluice_channels::config::Problem;

/// `tls:`: connect to the brokers over TLS (`security.protocol` `ssl`, or `sasl_ssl` with
/// `sasl:`). Every field is optional: `tls: {}` trusts the system's CAs and sends no client
/// certificate.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The CA certificate(s) that signed the brokers' certificates, a PEM file or a folder
    /// (`ssl.ca.location`); default: the system's.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// The client certificate, PEM, for brokers that require one (mTLS;
    /// `ssl.certificate.location`).
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key, PEM (`ssl.key.location`).
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// The passphrase of an encrypted `key` (`ssl.key.password`).
    #[serde(default)]
    pub key_password: Option<Secret>,
    /// Check that the broker's certificate names the host connected to (default: yes;
    /// `ssl.endpoint.identification.algorithm`).
    #[serde(default = "yes")]
    pub verify_hostname: bool,
    /// A digest of the files' contents when the configuration was read ([`TlsConfig::read_files`]),
    /// so that a reload after a certificate or key was replaced at the same path sees a change
    /// and restarts the sink with it.
    #[serde(skip)]
    pub contents: u64,
}

impl TlsConfig {
    /// Reads the CA (a file, or a folder's file names and sizes), certificate and key, and
    /// keeps a digest of them in [`TlsConfig::contents`]. Unreadable files count as empty:
    /// `validate` reports them.
    pub fn read_files(&mut self) {
        use std::hash::{Hash, Hasher};
        use std::io::Read;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for path in [&self.ca, &self.cert, &self.key].into_iter().flatten() {
            path.hash(&mut h);
            if let Ok(entries) = std::fs::read_dir(path) {
                let mut names: Vec<(std::ffi::OsString, u64)> = entries
                    .flatten()
                    .map(|e| (e.file_name(), e.metadata().map_or(0, |m| m.len())))
                    .collect();
                names.sort();
                names.hash(&mut h);
                continue;
            }
            let mut bytes = Vec::new();
            if let Ok(f) = sluice_channels::fsutil::open_regular_file(path) {
                let _ = f.take(MAX_TLS_FILE).read_to_end(&mut bytes);
            }
            bytes.hash(&mut h);
        }
        self.contents = h.finish();
    }
}

/// The most of a certificate or key file read for [`TlsConfig::contents`].
const MAX_TLS_FILE: u64 = 1 << 20;

fn yes() -> bool {
    true
}

/// `sasl:`: authenticate to the brokers with a user name and a password (`security.protocol`
/// `sasl_ssl` with `tls:`, else `sasl_plaintext`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslConfig {
    /// The mechanism: `SCRAM-SHA-512`, `SCRAM-SHA-256` or `PLAIN` (`sasl.mechanisms`).
    pub mechanism: SaslMechanism,
    /// The user (`sasl.username`).
    pub username: String,
    /// The password (`sasl.password`); `${file:/path}` reads it from a file.
    pub password: Secret,
    /// Let `PLAIN` send the password in clear to a listener without TLS (default: refused).
    #[serde(default)]
    pub allow_plaintext: bool,
}

/// A SASL mechanism with a user name and a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SaslMechanism {
    /// The password itself goes to the broker: safe only inside TLS.
    #[serde(rename = "PLAIN", alias = "plain")]
    Plain,
    /// Salted challenge-response with SHA-256: the password never leaves the client.
    #[serde(rename = "SCRAM-SHA-256", alias = "scram-sha-256")]
    ScramSha256,
    /// Salted challenge-response with SHA-512: the password never leaves the client.
    #[serde(rename = "SCRAM-SHA-512", alias = "scram-sha-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// librdkafka's name of the mechanism.
    pub fn setting(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// The librdkafka settings that `tls:` and `sasl:` own; each is refused in a passthrough map
/// (`producer:`, `-X`) when the typed option it belongs to is set.
pub const SECURITY_SETTINGS: [(&str, &str); 13] = [
    ("ssl.ca.pem", "tls.ca"),
    ("ssl.certificate.pem", "tls.cert"),
    ("ssl.key.pem", "tls.key"),
    ("sasl.mechanism", "sasl.mechanism"),
    ("security.protocol", "tls` or `sasl"),
    ("ssl.ca.location", "tls.ca"),
    ("ssl.certificate.location", "tls.cert"),
    ("ssl.key.location", "tls.key"),
    ("ssl.key.password", "tls.key_password"),
    (
        "ssl.endpoint.identification.algorithm",
        "tls.verify_hostname",
    ),
    ("sasl.mechanisms", "sasl.mechanism"),
    ("sasl.username", "sasl.username"),
    ("sasl.password", "sasl.password"),
];

/// librdkafka settings whose values are secrets: never printed.
pub const SECRET_SETTINGS: [&str; 6] = [
    "sasl.password",
    "ssl.key.password",
    "ssl.keystore.password",
    "ssl.key.pem",
    "sasl.oauthbearer.client.secret",
    "sasl.jaas.config",
];

/// The `tls:` and `sasl:` options of one client.
#[derive(Debug, Clone, Copy, Default)]
pub struct Security<'a> {
    /// `tls:`, if set.
    pub tls: Option<&'a TlsConfig>,
    /// `sasl:`, if set.
    pub sasl: Option<&'a SaslConfig>,
}

impl Security<'_> {
    /// Whether either option is set.
    pub fn is_set(&self) -> bool {
        self.tls.is_some() || self.sasl.is_some()
    }

    /// The `security.protocol` the options stand for, if any is set.
    pub fn protocol(&self) -> Option<&'static str> {
        match (self.tls.is_some(), self.sasl.is_some()) {
            (false, false) => None,
            (true, false) => Some("ssl"),
            (true, true) => Some("sasl_ssl"),
            (false, true) => Some("sasl_plaintext"),
        }
    }

    /// Sets the librdkafka settings of the options on `c`.
    pub fn apply(&self, c: &mut ClientConfig) {
        let Some(protocol) = self.protocol() else {
            return;
        };
        c.set("security.protocol", protocol);
        if let Some(t) = self.tls {
            let path = |p: &PathBuf| p.to_string_lossy().into_owned();
            if let Some(ca) = &t.ca {
                c.set("ssl.ca.location", path(ca));
            }
            if let Some(cert) = &t.cert {
                c.set("ssl.certificate.location", path(cert));
            }
            if let Some(key) = &t.key {
                c.set("ssl.key.location", path(key));
            }
            if let Some(pw) = &t.key_password {
                c.set("ssl.key.password", pw.expose());
            }
            c.set(
                "ssl.endpoint.identification.algorithm",
                if t.verify_hostname { "https" } else { "none" },
            );
        }
        if let Some(s) = self.sasl {
            c.set("sasl.mechanisms", s.mechanism.setting());
            c.set("sasl.username", &s.username);
            c.set("sasl.password", s.password.expose());
        }
    }

    /// Checks the options, and the passthrough settings `passthrough` (named `prefix.KEY` in
    /// problems) against them: a setting an option owns, a key file that cannot be read, and
    /// a password that would go to the broker in clear.
    pub fn validate<'v>(
        &self,
        passthrough: impl Iterator<Item = (&'v str, String)> + Clone,
        prefix: &str,
    ) -> Vec<Problem> {
        let mut p = Vec::new();
        if self.is_set() {
            for (key, option) in SECURITY_SETTINGS {
                if passthrough.clone().any(|(k, _)| k == key) {
                    p.push(Problem::new(
                        format!("{prefix}.{key}"),
                        format!("set with the option `{option}`, not here"),
                    ));
                }
            }
        }
        let verification_off = passthrough.clone().any(|(k, v)| {
            k == "enable.ssl.certificate.verification"
                && matches!(v.trim().to_ascii_lowercase().as_str(), "false" | "0" | "f")
        });
        if self.tls.is_some() && verification_off {
            p.push(Problem::new(
                format!("{prefix}.enable.ssl.certificate.verification"),
                "turns off checking the broker's certificate, which `tls` is for: name the CA \
                 that signed it in `tls.ca` (or set `tls.verify_hostname: false` if only its \
                 name does not match)",
            ));
        }
        if let Some(t) = self.tls {
            let files = [
                ("tls.ca", &t.ca, true),
                ("tls.cert", &t.cert, false),
                ("tls.key", &t.key, false),
            ];
            for (key, path, folder_ok) in files {
                if let Some(path) = path
                    && let Err(e) = readable(path, folder_ok)
                {
                    p.push(Problem::new(
                        key,
                        format!("cannot read `{}`: {e}", path.display()),
                    ));
                }
            }
            if t.cert.is_some() != t.key.is_some() {
                let (missing, given) = if t.cert.is_some() {
                    ("tls.key", "tls.cert")
                } else {
                    ("tls.cert", "tls.key")
                };
                p.push(Problem::new(
                    missing,
                    format!("missing: `{given}` needs it (a client certificate and its key)"),
                ));
            }
            if t.key_password
                .as_ref()
                .is_some_and(|k| k.expose().is_empty())
            {
                p.push(Problem::new("tls.key_password", "must not be empty"));
            }
            if t.key_password.is_some() && t.key.is_none() {
                p.push(Problem::new("tls.key_password", "only used with `tls.key`"));
            }
        }
        if let Some(s) = self.sasl {
            if s.username.is_empty() {
                p.push(Problem::new("sasl.username", "must not be empty"));
            }
            if s.password.expose().is_empty() {
                p.push(Problem::new("sasl.password", "must not be empty"));
            }
            if s.mechanism == SaslMechanism::Plain && self.tls.is_none() && !s.allow_plaintext {
                p.push(Problem::new(
                    "sasl.mechanism",
                    "PLAIN would send the password in clear to a listener without TLS; add \
                     `tls:` (SASL_SSL), use SCRAM-SHA-512, or set `sasl.allow_plaintext: true` \
                     to accept that",
                ));
            }
        } else {
            let get = |key: &str| {
                passthrough
                    .clone()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.trim().to_ascii_lowercase())
            };
            let plain = get("sasl.mechanisms")
                .or_else(|| get("sasl.mechanism"))
                .is_some_and(|m| m == "plain");
            if plain && get("security.protocol").as_deref() == Some("sasl_plaintext") {
                p.push(Problem::new(
                    format!("{prefix}.security.protocol"),
                    "sasl_plaintext with the PLAIN mechanism sends the password in clear; use \
                     sasl_ssl, or the `sasl:` option with `allow_plaintext: true` to accept that",
                ));
            }
        }
        p
    }
}

/// What a failure to create the client means in terms of the options, when it comes from
/// loading the TLS files (librdkafka passes OpenSSL's codes on as they are).
pub fn explain_creation_error(text: &str) -> Option<&'static str> {
    if text.contains("ssl.key.location failed") || text.contains("ssl.key.pem failed") {
        Some(
            "tls.key: cannot load the private key: a wrong tls.key_password, an encrypted key \
             without one, or not a PEM private key",
        )
    } else if text.contains("key values mismatch") {
        Some("tls.key: the private key does not belong to the certificate in tls.cert")
    } else if text.contains("ssl.certificate.location failed") {
        Some("tls.cert: cannot load the client certificate: not a PEM certificate")
    } else if text.contains("ssl.ca.location failed") {
        Some("tls.ca: cannot load the CA certificates: no PEM certificate in it")
    } else {
        None
    }
}

/// The mode of the key file `path` when it is open wider than its owner and its group may
/// read it: any access for others, or write access for the group. Group read is allowed:
/// that is how a Kubernetes secret reaches a non-root user (`fsGroup`, mode 0440).
pub fn open_key_file_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o027 != 0).then_some(mode & 0o7777)
}

/// Opens `path` for reading: a regular file, or a folder (listed) when `folder_ok`; never
/// waits on a FIFO.
pub(crate) fn readable(path: &Path, folder_ok: bool) -> std::io::Result<()> {
    if path.as_os_str().is_empty() {
        return Err(std::io::Error::other("the path is empty"));
    }
    if folder_ok && std::fs::metadata(path)?.is_dir() {
        return std::fs::read_dir(path).map(drop);
    }
    sluice_channels::fsutil::open_regular_file(path).map(drop)
}

#[cfg(test)]
mod tests {
    use super::super::KafkaConfig;
    use std::os::unix::fs::PermissionsExt;

    fn sink(extra: &str) -> KafkaConfig {
        serde_yaml::from_str(&format!("{{ brokers: \"b:9093\", topic: t, {extra} }}")).unwrap()
    }

    fn problems(extra: &str) -> Vec<String> {
        sink(extra)
            .validate()
            .into_iter()
            .map(|p| p.to_string())
            .collect()
    }

    #[test]
    fn tls_and_sasl_map_to_librdkafka_settings() {
        let dir = tempfile::tempdir().unwrap();
        let f = |n: &str| {
            let p = dir.path().join(n);
            std::fs::write(&p, "x").unwrap();
            p.display().to_string()
        };
        let (ca, cert, key) = (f("ca.pem"), f("c.crt"), f("c.key"));
        let c = sink(&format!(
            "tls: {{ ca: {ca}, cert: {cert}, key: {key}, key_password: kp-1234 }}, \
             sasl: {{ mechanism: SCRAM-SHA-512, username: u, password: pw-5678 }}"
        ));
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        let cc = c.client_config("k1");
        for (k, v) in [
            ("security.protocol", "sasl_ssl"),
            ("ssl.ca.location", ca.as_str()),
            ("ssl.certificate.location", cert.as_str()),
            ("ssl.key.location", key.as_str()),
            ("ssl.key.password", "kp-1234"),
            ("ssl.endpoint.identification.algorithm", "https"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.username", "u"),
            ("sasl.password", "pw-5678"),
        ] {
            assert_eq!(cc.get(k), Some(v), "{k}");
        }
        let dump = format!("{c:?}");
        assert!(
            !dump.contains("kp-1234") && !dump.contains("pw-5678"),
            "{dump}"
        );
        let tls_only = sink("tls: { verify_hostname: false }").client_config("k1");
        assert_eq!(tls_only.get("security.protocol"), Some("ssl"));
        assert_eq!(
            tls_only.get("ssl.endpoint.identification.algorithm"),
            Some("none")
        );
        let sasl_only = sink("sasl: { mechanism: scram-sha-256, username: u, password: '123456' }");
        let cc = sasl_only.client_config("k1");
        assert_eq!(cc.get("security.protocol"), Some("sasl_plaintext"));
        assert_eq!(cc.get("sasl.mechanisms"), Some("SCRAM-SHA-256"));
        assert_eq!(cc.get("sasl.password"), Some("123456"));
        assert!(
            sink("")
                .client_config("k1")
                .get("security.protocol")
                .is_none()
        );
    }

    #[test]
    fn plain_without_tls_is_refused_unless_allowed() {
        let plain = "sasl: { mechanism: PLAIN, username: u, password: p";
        let p = problems(&format!("{plain} }}"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("sasl.mechanism: PLAIN would send the password in clear"));
        assert!(problems(&format!("{plain}, allow_plaintext: true }}")).is_empty());
        assert!(problems(&format!("tls: {{}}, {plain} }}")).is_empty());
        let p = problems(
            "producer: { security.protocol: SASL_PLAINTEXT, sasl.mechanisms: PLAIN, \
             sasl.username: u, sasl.password: p }",
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("producer.security.protocol: sasl_plaintext with the PLAIN"));
    }

    #[test]
    fn a_setting_an_option_owns_is_refused_in_the_producer_map_and_files_are_checked() {
        let p = problems(
            "tls: { ca: /nonexistent/ca.pem, cert: /nonexistent/c.crt }, \
             producer: { ssl.ca.location: /x, security.protocol: ssl }",
        );
        let want = [
            "producer.security.protocol: set with the option `tls` or `sasl`, not here",
            "producer.ssl.ca.location: set with the option `tls.ca`, not here",
            "tls.ca: cannot read `/nonexistent/ca.pem`",
            "tls.cert: cannot read `/nonexistent/c.crt`",
            "tls.key: missing: `tls.cert` needs it",
        ];
        for w in want {
            assert!(p.iter().any(|p| p.starts_with(w)), "{w} not in {p:?}");
        }
        let p = problems(
            "tls: {}, sasl: { mechanism: PLAIN, username: u, password: '' }, \
             producer: { enable.ssl.certificate.verification: false, ssl.ca.pem: x, sasl.mechanism: PLAIN }",
        );
        for w in [
            "sasl.password: must not be empty",
            "producer.enable.ssl.certificate.verification: turns off checking",
            "producer.ssl.ca.pem: set with the option `tls.ca`",
            "producer.sasl.mechanism: set with the option `sasl.mechanism`",
        ] {
            assert!(p.iter().any(|p| p.starts_with(w)), "{w} not in {p:?}");
        }
        let p = problems("tls: { key_password: x }");
        assert!(
            p.iter()
                .any(|p| p.starts_with("tls.key_password: only used with")),
            "{p:?}"
        );
        let e = serde_yaml::from_str::<KafkaConfig>(
            "{ brokers: b, topic: t, sasl: { mechanism: GSSAPI, username: u, password: p } }",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown variant `GSSAPI`"), "{e}");
    }

    #[test]
    fn tls_file_failures_at_start_are_named_by_option() {
        let cases = [
            (
                "ssl.key.location failed: error:0A080009:SSL routines::PEM lib",
                "tls.key: cannot load",
            ),
            (
                "Failed to create: SSL_CTX_check_private_key: key values mismatch",
                "tls.key: the private key does not belong",
            ),
            (
                "ssl.ca.location failed: error:05880009:x509 certificate routines::no certificate or crl found",
                "tls.ca: cannot load",
            ),
            (
                "ssl.certificate.location failed: x",
                "tls.cert: cannot load",
            ),
        ];
        for (text, want) in cases {
            let got = super::explain_creation_error(text).unwrap_or_default();
            assert!(got.starts_with(want), "{text}: {got}");
        }
        assert!(super::explain_creation_error("No such configuration property").is_none());
    }

    #[test]
    fn a_key_file_others_can_read_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.pem");
        std::fs::write(&key, "k").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(super::open_key_file_mode(&key), Some(0o644));
        for open in [0o604, 0o660, 0o601] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(open)).unwrap();
            assert_eq!(super::open_key_file_mode(&key), Some(open), "{open:o}");
        }
        for closed in [0o600, 0o400, 0o440, 0o640] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(closed)).unwrap();
            assert_eq!(super::open_key_file_mode(&key), None, "{closed:o}");
        }
        assert_eq!(super::open_key_file_mode(&dir.path().join("none")), None);
    }
}
