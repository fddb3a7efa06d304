//! The tree deserializer, on trees built by hand as any front end would build them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use sluice_channels::units::{ByteSize, HumanDuration};
use sluice_sinks::kafka::{KafkaConfig, ProducerValue};
use sluice_sources::taildir::TailDirConfig;

use super::*;

fn s(text: &str) -> Node {
    Node::Scalar(Scalar::Str(text.to_owned()))
}

fn map(entries: &[(&str, Node)]) -> Node {
    Node::Map(entries.iter().map(|(k, v)| (s(k), v.clone())).collect())
}

/// The problem deserializing `node` at `a1.sinks.k1` into `T`, as `key: message`.
fn error<T: std::fmt::Debug + serde::de::DeserializeOwned>(node: &Node) -> String {
    deserialize::<T>(node, "a1.sinks.k1")
        .unwrap_err()
        .to_string()
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    count: usize,
    offset: i32,
    ratio: f64,
    on: bool,
    limit: Option<u16>,
    every: HumanDuration,
    size: ByteSize,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

fn options(entries: &[(&str, Node)]) -> Node {
    let mut all = vec![
        ("count", s("100")),
        ("offset", s("-3")),
        ("ratio", s("0.5")),
        ("on", s("true")),
        ("limit", s("7")),
        ("every", s("5s")),
        ("size", s("64MiB")),
    ];
    for (k, v) in entries {
        all.retain(|(key, _)| key != k);
        all.push((k, v.clone()));
    }
    map(&all)
}

#[test]
fn text_reads_as_numbers_booleans_durations_and_sizes_where_they_are_expected() {
    let o: Options = deserialize(&options(&[]), "a1").unwrap();
    assert_eq!(
        o,
        Options {
            count: 100,
            offset: -3,
            ratio: 0.5,
            on: true,
            limit: Some(7),
            every: HumanDuration(Duration::from_secs(5)),
            size: ByteSize(64 << 20),
            names: Vec::new(),
            labels: BTreeMap::new(),
        }
    );
}

#[test]
fn typed_values_are_taken_as_they_are() {
    let typed = options(&[
        ("count", Node::Scalar(Scalar::UInt(100))),
        ("offset", Node::Scalar(Scalar::Int(-3))),
        ("ratio", Node::Scalar(Scalar::Float(0.5))),
        ("on", Node::Scalar(Scalar::Bool(true))),
        ("limit", Node::Null),
        ("every", Node::Scalar(Scalar::UInt(5))),
        ("size", Node::Scalar(Scalar::UInt(1024))),
        ("names", Node::Null),
        ("labels", Node::Null),
    ]);
    let o: Options = deserialize(&typed, "a1").unwrap();
    assert_eq!((o.count, o.offset, o.on, o.limit), (100, -3, true, None));
    assert_eq!(
        (o.every.0, o.size),
        (Duration::from_secs(5), ByteSize(1024))
    );
    assert!(o.names.is_empty() && o.labels.is_empty());
    // A typed value is refused where it does not fit, as serde_yaml refused it.
    let number_as_name = options(&[("names", Node::List(vec![Node::Scalar(Scalar::UInt(3))]))]);
    assert_eq!(
        error::<Options>(&number_as_name),
        "a1.sinks.k1.names[0]: invalid type: integer `3`, expected a string"
    );
    let fraction = options(&[("count", Node::Scalar(Scalar::Float(1.5)))]);
    assert_eq!(
        error::<Options>(&fraction),
        "a1.sinks.k1.count: invalid type: floating point `1.5`, expected usize"
    );
}

#[test]
fn a_bad_value_names_its_full_key_path() {
    assert_eq!(
        error::<Options>(&options(&[("count", s("lots"))])),
        "a1.sinks.k1.count: invalid type: string \"lots\", expected usize"
    );
    assert_eq!(
        error::<Options>(&options(&[("on", s("yes"))])),
        "a1.sinks.k1.on: invalid type: string \"yes\", expected a boolean"
    );
    assert_eq!(
        error::<Options>(&options(&[("count", s("-4"))])),
        "a1.sinks.k1.count: invalid value `-4`: out of range for this key (0 to 18446744073709551615)"
    );
    assert_eq!(
        error::<Options>(&options(&[("limit", Node::Scalar(Scalar::UInt(70000)))])),
        "a1.sinks.k1.limit: invalid value `70000`: out of range for this key (0 to 65535)"
    );
    for too_large in [
        s("99999999999999999999999"),
        Node::Scalar(Scalar::TooLarge("99999999999999999999999".into())),
    ] {
        assert_eq!(
            error::<Options>(&options(&[("count", too_large)])),
            "a1.sinks.k1.count: `99999999999999999999999` is out of range for this key (too large)"
        );
    }
    let e = error::<Options>(&options(&[("every", s("soon"))]));
    assert!(
        e.starts_with("a1.sinks.k1.every: `soon` is not a duration"),
        "{e}"
    );
    let e = error::<Options>(&options(&[("labels", map(&[("app", Node::List(vec![]))]))]));
    assert_eq!(
        e,
        "a1.sinks.k1.labels.app: invalid type: sequence, expected a string"
    );
}

#[test]
fn unknown_and_missing_keys_name_their_key_paths() {
    assert_eq!(
        error::<Options>(&options(&[("colour", s("red"))])),
        "a1.sinks.k1.colour: unknown key (expected one of `count`, `offset`, `ratio`, `on`, \
         `limit`, `every`, `size`, `names`, `labels`)"
    );
    assert_eq!(
        error::<KafkaConfig>(&map(&[("brokers", s("b:9092"))])),
        "a1.sinks.k1.topic: missing"
    );
    let no_glob = map(&[("paths", Node::List(vec![map(&[("headers", map(&[]))])]))]);
    assert_eq!(
        error::<TailDirConfig>(&no_glob),
        "a1.sinks.k1.paths[0].glob: missing"
    );
    let stray = map(&[(
        "paths",
        Node::List(vec![
            s("/a/*.log"),
            map(&[("glob", s("/b")), ("x", s("1"))]),
        ]),
    )]);
    assert_eq!(
        error::<TailDirConfig>(&stray),
        "a1.sinks.k1.paths[1].x: unknown key (expected `glob` or `headers`)"
    );
}

#[test]
fn nested_maps_and_lists_deserialize_into_the_option_structs() {
    let kafka = map(&[
        ("brokers", s("k1:9092,k2:9092")),
        ("topic", s("logs-%{source}")),
        ("batch_size", s("500")),
        ("acks", s("all")),
        ("headers", Node::List(vec![s("path"), s("offset")])),
        (
            "producer",
            map(&[
                ("linger.ms", s("20")),
                ("socket.keepalive.enable", Node::Scalar(Scalar::Bool(true))),
            ]),
        ),
    ]);
    let k: KafkaConfig = deserialize(&kafka, "a1.sinks.k1").unwrap();
    assert_eq!((k.batch_size, k.topic.as_str()), (500, "logs-%{source}"));
    assert_eq!(k.headers, ["path", "offset"]);
    assert_eq!(k.producer["linger.ms"], ProducerValue::Str("20".into()));
    assert_eq!(
        k.producer["socket.keepalive.enable"],
        ProducerValue::Bool(true)
    );
    assert!(k.validate().is_empty(), "{:?}", k.validate());
    // Errors raised once a value is read (a template, a conversion) are placed too.
    let bad_topic = map(&[("brokers", s("b:1")), ("topic", s("logs-%{x"))]);
    let e = error::<KafkaConfig>(&bad_topic);
    assert!(e.starts_with("a1.sinks.k1.topic: `logs-%{x`:"), "{e}");
    let bad_acks = map(&[("brokers", s("b:1")), ("topic", s("t")), ("acks", s("2"))]);
    assert_eq!(
        error::<KafkaConfig>(&bad_acks),
        "a1.sinks.k1.acks: `2` is not one of: all, 1, 0"
    );
    let taildir = map(&[(
        "paths",
        Node::List(vec![
            s("/var/log/a/*.log"),
            map(&[
                ("glob", s("/var/log/b/**/*.log")),
                ("headers", map(&[("app", s("b"))])),
            ]),
        ]),
    )]);
    let t: TailDirConfig = deserialize(&taildir, "a1.sources.r1").unwrap();
    assert_eq!(t.paths[0].glob, "/var/log/a/*.log");
    assert!(t.paths[0].headers.is_empty());
    assert_eq!(t.paths[1].headers["app"], "b");
}

#[test]
fn a_key_that_is_not_text_is_named_and_refused_where_a_name_is_expected() {
    let typed_key = Node::Map(
        [(Node::Scalar(Scalar::UInt(1)), s("x"))]
            .into_iter()
            .collect(),
    );
    assert_eq!(
        error::<BTreeMap<String, String>>(&typed_key),
        "a1.sinks.k1.1: invalid type: integer `1`, expected a string"
    );
    let list_key = Node::Map([(Node::List(vec![]), s("x"))].into_iter().collect());
    assert_eq!(
        error::<BTreeMap<String, String>>(&list_key),
        "a1.sinks.k1.?: invalid type: sequence, expected a string"
    );
}

/// `node` with every typed value turned into its text, as a format that only has text (a
/// properties file) gives it.
fn as_text(node: &Node) -> Node {
    match node {
        Node::Null => Node::Null,
        Node::Scalar(v) => s(&v.to_string()),
        Node::List(items) => Node::List(items.iter().map(as_text).collect()),
        Node::Map(m) => Node::Map(
            m.entries
                .iter()
                .map(|(k, v)| (k.clone(), as_text(v)))
                .collect(),
        ),
    }
}

#[test]
fn a_tree_of_text_only_loads_to_the_same_configuration_as_typed_yaml() {
    let quickstart =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/quickstart.yaml");
    let every_kind = r#"
a1:
  shutdown_timeout: 10
  sources:
    r1: { type: taildir, paths: [/a/*.log, { glob: /b/*.log, headers: { app: b } }], batch_size: 500, max_open_files: 64, channel: c1 }
    r2: { type: spooldir, dir: /spool, batch_size: 10, max_line_bytes: 65536, channel: c2 }
  channels:
    c1: { type: file, dir: c1, capacity: 1073741824, capacity_events: 1000, fsync: interval }
    c2: { type: memory, capacity: 10, capacity_bytes: 4096 }
  sinks:
    k1: { type: kafka, channel: c1, brokers: "b:9092", topic: t, batch_size: 100, batches_in_flight: 4, max_message_bytes: 65536 }
    k2: { type: console, channel: c2, batch_size: 7 }
"#;
    for (name, origin, text) in [
        (
            "quickstart",
            quickstart.clone(),
            std::fs::read_to_string(&quickstart).unwrap(),
        ),
        ("a1", "every-kind.yaml".into(), every_kind.to_owned()),
    ] {
        let typed = crate::config::yaml::read(&text, &origin, |_| None).unwrap();
        let Node::Map(text_only) = as_text(&Node::Map(typed.clone())) else {
            unreachable!("a map stays a map")
        };
        assert_ne!(text_only, typed, "{name}: the example has typed values");
        assert_eq!(
            crate::config::from_tree(&text_only, name, &origin).unwrap(),
            crate::config::from_tree(&typed, name, &origin).unwrap(),
            "{name}"
        );
    }
}
