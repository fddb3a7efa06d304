//! The security settings of Flume's Kafka sink (the Java client's) as the Kafka sink's `tls:`
//! and `sasl:` options: `security.protocol`, `sasl.mechanism`, the JAAS line that holds the
//! credentials, and PEM truststores and keystores. What librdkafka cannot read (a JKS or
//! PKCS#12 store, a login module other than PLAIN's and SCRAM's) is refused with the command
//! that converts it.

use super::{Comp, Translator, text};
use crate::config::tree::{Map, Node};

/// The credentials of a `sasl.jaas.config` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Jaas {
    /// The login module's class, as written.
    pub module: String,
    /// `username="..."`.
    pub username: Option<String>,
    /// `password="..."`.
    pub password: Option<String>,
}

/// Reads `Module required key="value" ...;` (values quoted or not; `\"` and `\\` inside
/// quotes). The error never quotes the line: it holds a password.
pub(super) fn parse_jaas(line: &str) -> Result<Jaas, String> {
    let mut chars = line.trim().chars().peekable();
    let mut words: Vec<(String, bool)> = Vec::new();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&c) = chars.peek() else { break };
        if c == ';' {
            chars.next();
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            if chars.peek().is_some() {
                return Err("text after the `;` that ends the login module".to_owned());
            }
            break;
        }
        let mut word = String::new();
        let mut quoted = false;
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() || c == ';' {
                break;
            }
            chars.next();
            if c != '"' {
                word.push(c);
                continue;
            }
            quoted = true;
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(e) => word.push(e),
                        None => return Err("a quoted value is not closed".to_owned()),
                    },
                    Some(c) => word.push(c),
                    None => return Err("a quoted value is not closed".to_owned()),
                }
            }
        }
        words.push((word, quoted));
    }
    let mut words = words.into_iter();
    let module = match words.next() {
        Some((m, false)) if !m.contains('=') => m,
        _ => return Err("expected a login module's class first".to_owned()),
    };
    match words.next() {
        Some((flag, false))
            if ["required", "requisite", "sufficient", "optional"]
                .contains(&flag.to_ascii_lowercase().as_str()) => {}
        _ => return Err("expected `required` after the login module".to_owned()),
    }
    let mut jaas = Jaas {
        module,
        username: None,
        password: None,
    };
    for (word, _) in words {
        let Some((k, v)) = word.split_once('=') else {
            return Err("expected key=\"value\" options after `required`".to_owned());
        };
        match k {
            "username" => jaas.username = Some(v.to_owned()),
            "password" => jaas.password = Some(v.to_owned()),
            _ => {}
        }
    }
    Ok(jaas)
}

/// The Java client's security settings among `producer` (the Flume sink's
/// `kafka.producer.*`), taken out of it.
struct Settings(Vec<(String, String)>);

impl Settings {
    fn take(&mut self, names: &[&str]) -> Option<(String, String)> {
        let i = self
            .0
            .iter()
            .position(|(k, _)| names.contains(&k.as_str()))?;
        Some(self.0.remove(i))
    }
}

/// The keys this translation reads, in the Java client's names and librdkafka's.
const KEYS: [&str; 18] = [
    "security.protocol",
    "sasl.username",
    "sasl.password",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.jaas.config",
    "sasl.allow_plaintext",
    "ssl.truststore.location",
    "ssl.truststore.type",
    "ssl.truststore.password",
    "ssl.keystore.location",
    "ssl.keystore.type",
    "ssl.keystore.password",
    "ssl.key.password",
    "ssl.endpoint.identification.algorithm",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
];

/// Whether `path` (typed `store_type` in the Flume file, if at all) is a PEM file.
fn is_pem(store_type: Option<&str>, path: &str) -> bool {
    match store_type {
        Some(t) => t.eq_ignore_ascii_case("PEM"),
        None => {
            use std::io::Read;
            // The first bytes only, of a regular file only: never a FIFO's endless wait.
            let mut head = [0u8; 10];
            match sluice_channels::fsutil::open_regular_file(std::path::Path::new(path))
                .and_then(|mut f| f.read(&mut head))
            {
                Ok(n) => head[..n].starts_with(b"-----BEGIN"),
                Err(_) => path.ends_with(".pem") || path.ends_with(".crt"),
            }
        }
    }
}

impl Translator {
    /// Sets `tls:` and `sasl:` on the Kafka sink `c` from the security settings of its
    /// `kafka.producer.*` (`producer`), and takes those out of `producer`. Does nothing when
    /// the file sets neither a secured `security.protocol` nor `sasl.jaas.config`: the
    /// settings then go through as they are.
    pub(super) fn kafka_security(&mut self, c: &mut Comp, producer: &mut Vec<(String, String)>) {
        let protocol = producer
            .iter()
            .find(|(k, _)| k == "security.protocol")
            .map(|(_, v)| v.to_ascii_uppercase());
        let jaas_given = producer.iter().any(|(k, _)| k == "sasl.jaas.config");
        let secured = matches!(
            protocol.as_deref(),
            Some("SSL" | "SASL_SSL" | "SASL_PLAINTEXT")
        );
        if !secured && !jaas_given {
            return;
        }
        let (s, rest): (Vec<_>, Vec<_>) = std::mem::take(producer)
            .into_iter()
            .partition(|(k, _)| KEYS.contains(&k.as_str()));
        *producer = rest;
        let mut s = Settings(s);
        let flume = |k: &str| format!("kafka.producer.{k}");
        let protocol_key = s.take(&["security.protocol"]).map(|(k, _)| k);
        let protocol = protocol.unwrap_or_else(|| "PLAINTEXT".to_owned());
        let tls_on = matches!(protocol.as_str(), "SSL" | "SASL_SSL");
        let sasl_on = protocol.starts_with("SASL_");
        if let (Some(k), false) = (&protocol_key, secured) {
            self.problem(
                &c.key(&flume(k)),
                &format!("`{protocol}` is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
            );
            return;
        }
        let mut tls = Map::default();
        let mut sasl = Map::default();
        self.kafka_tls(c, &mut s, tls_on, &mut tls);
        if sasl_on {
            self.kafka_sasl(c, &mut s, &mut sasl);
        } else if let Some((k, _)) = s.take(&["sasl.jaas.config"]) {
            self.no_effect(
                &c.key(&flume(&k)),
                "security.protocol is not SASL_PLAINTEXT or SASL_SSL: no SASL is used",
            );
        }
        for (k, _) in s.0 {
            self.no_effect(
                &c.key(&flume(&k)),
                "not used with this security.protocol (or a PEM file has no password)",
            );
        }
        if tls_on {
            c.out.insert(text("tls"), Node::Map(tls));
        }
        if sasl_on && sasl.named().next().is_some() {
            c.out.insert(text("sasl"), Node::Map(sasl));
        }
        if let Some(k) = protocol_key {
            for (on, group) in [(tls_on, "tls"), (sasl_on, "sasl")] {
                if on {
                    let at = format!("{}.{group}", c.out_at);
                    self.prov.keys.insert(at, c.key(&flume(&k)));
                }
            }
        }
    }

    /// Sets `option` of the `group` map (`tls` or `sasl`) of `c` to `value`, from the Flume
    /// key `kafka.producer.KEY`.
    fn secure_option(
        &mut self,
        c: &Comp,
        map: &mut Map,
        group: &str,
        option: &str,
        value: &str,
        key: &str,
    ) {
        self.prov.keys.insert(
            format!("{}.{group}.{option}", c.out_at),
            c.key(&format!("kafka.producer.{key}")),
        );
        map.insert(text(option), text(value));
    }

    fn kafka_tls(&mut self, c: &Comp, s: &mut Settings, tls_on: bool, tls: &mut Map) {
        if !tls_on {
            return;
        }
        let flume = |k: &str| c.key(&format!("kafka.producer.{k}"));
        let trust_type = s.take(&["ssl.truststore.type"]).map(|(_, v)| v);
        if let Some((k, path)) = s.take(&["ssl.truststore.location", "ssl.ca.location"]) {
            if k == "ssl.ca.location" || is_pem(trust_type.as_deref(), &path) {
                self.secure_option(c, tls, "tls", "ca", &path, &k);
            } else {
                self.problem(
                    &flume(&k),
                    "a JKS or PKCS#12 truststore, which librdkafka cannot read: export its CA \
                     certificate as PEM (`keytool -exportcert -rfc -alias CA -keystore FILE \
                     > ca.pem`) and name that file here",
                );
            }
        }
        let key_type = s.take(&["ssl.keystore.type"]).map(|(_, v)| v);
        if let Some((k, path)) = s.take(&["ssl.keystore.location"]) {
            if is_pem(key_type.as_deref(), &path) {
                // A PEM keystore holds the key and the certificate chain in one file.
                self.secure_option(c, tls, "tls", "cert", &path, &k);
                self.secure_option(c, tls, "tls", "key", &path, &k);
            } else {
                self.problem(
                    &flume(&k),
                    "a JKS or PKCS#12 keystore, which librdkafka cannot read: convert it to PEM \
                     (`openssl pkcs12 -in store.p12 -out client.pem`; a JKS store first with \
                     `keytool -importkeystore -deststoretype PKCS12`) and name that file here",
                );
            }
        }
        for (from, option) in [
            ("ssl.certificate.location", "cert"),
            ("ssl.key.location", "key"),
            ("ssl.key.password", "key_password"),
        ] {
            if let Some((k, v)) = s.take(&[from]) {
                self.secure_option(c, tls, "tls", option, &v, &k);
            }
        }
        if let Some((k, v)) = s.take(&["ssl.endpoint.identification.algorithm"]) {
            let verify = if v.trim().is_empty() || v.eq_ignore_ascii_case("none") {
                "false"
            } else {
                "true"
            };
            self.secure_option(c, tls, "tls", "verify_hostname", verify, &k);
        }
    }

    fn kafka_sasl(&mut self, c: &Comp, s: &mut Settings, sasl: &mut Map) {
        let flume = |k: &str| c.key(&format!("kafka.producer.{k}"));
        let mechanism = s.take(&["sasl.mechanism", "sasl.mechanisms"]);
        let user = s.take(&["sasl.username"]);
        let password = s.take(&["sasl.password"]);
        if let (Some((mk, m)), Some((uk, u)), Some((pk, p))) = (&mechanism, &user, &password) {
            // librdkafka's own names, written as such in the Flume file.
            self.secure_option(c, sasl, "sasl", "mechanism", &m.to_ascii_uppercase(), mk);
            self.secure_option(c, sasl, "sasl", "username", u, uk);
            self.secure_option(c, sasl, "sasl", "password", p, pk);
            if let Some((k, v)) = s.take(&["sasl.allow_plaintext"]) {
                self.secure_option(c, sasl, "sasl", "allow_plaintext", &v, &k);
            }
            return;
        }
        let Some((jaas_key, line)) = s.take(&["sasl.jaas.config"]) else {
            let at = mechanism.map_or_else(|| "sasl.jaas.config".to_owned(), |(k, _)| k);
            self.problem(
                &flume(&at),
                "SASL needs the credentials: sasl.jaas.config with PlainLoginModule or \
                 ScramLoginModule and username=\"...\" password=\"...\" (or librdkafka's \
                 sasl.mechanisms, sasl.username and sasl.password)",
            );
            return;
        };
        let jaas = match parse_jaas(&line) {
            Ok(j) => j,
            Err(e) => {
                self.problem(&flume(&jaas_key), &format!("cannot read it: {e}"));
                return;
            }
        };
        let module = jaas.module.rsplit('.').next().unwrap_or_default();
        let mech = match (module, &mechanism) {
            ("PlainLoginModule", None) => "PLAIN".to_owned(),
            ("PlainLoginModule" | "ScramLoginModule", Some((_, m))) => m.to_ascii_uppercase(),
            ("ScramLoginModule", None) => {
                self.problem(
                    &flume(&jaas_key),
                    "ScramLoginModule needs kafka.producer.sasl.mechanism = SCRAM-SHA-512 (or \
                     SCRAM-SHA-256)",
                );
                return;
            }
            _ => {
                self.problem(
                    &flume(&jaas_key),
                    &format!(
                        "the login module `{}` is not supported: Sluice takes PlainLoginModule \
                         and ScramLoginModule (GSSAPI and OAUTHBEARER: librdkafka's own \
                         settings, see docs/kafka.md)",
                        jaas.module
                    ),
                );
                return;
            }
        };
        let mech_key = mechanism.map_or_else(|| jaas_key.clone(), |(k, _)| k);
        self.secure_option(c, sasl, "sasl", "mechanism", &mech, &mech_key);
        for (option, value) in [("username", jaas.username), ("password", jaas.password)] {
            match value {
                Some(v) => self.secure_option(c, sasl, "sasl", option, &v, &jaas_key),
                None => self.problem(
                    &flume(&jaas_key),
                    &format!("the login module has no {option}=\"...\""),
                ),
            }
        }
        if let Some((k, v)) = s.take(&["sasl.allow_plaintext"]) {
            self.secure_option(c, sasl, "sasl", "allow_plaintext", &v, &k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jaas_line_gives_its_module_and_credentials() {
        let j = parse_jaas(
            r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="alice" password="p\"w;x" ;"#,
        )
        .unwrap();
        assert_eq!(
            j.module,
            "org.apache.kafka.common.security.scram.ScramLoginModule"
        );
        assert_eq!(j.username.as_deref(), Some("alice"));
        assert_eq!(j.password.as_deref(), Some("p\"w;x"));
        let j = parse_jaas("m.PlainLoginModule required username=bob password=pw").unwrap();
        assert_eq!(j.password.as_deref(), Some("pw"));
    }

    #[test]
    fn a_bad_jaas_line_is_refused_without_quoting_it() {
        for line in [
            "",
            "username=\"u\"",
            "m.PlainLoginModule username=\"u\" password=\"SECRET\";",
            "m.PlainLoginModule required password=\"SECRET",
            "m.PlainLoginModule required password=\"SECRET\"; more",
            "m.PlainLoginModule required SECRET;",
        ] {
            let e = parse_jaas(line).unwrap_err();
            assert!(!e.contains("SECRET"), "{line}: {e}");
        }
    }
}
