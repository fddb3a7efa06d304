use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use sluice_channels::{Channel, Event, MemoryChannel, MemoryChannelConfig, Origin};

use super::*;

fn channel(name: &str, capacity: usize) -> Arc<MemoryChannel> {
    Arc::new(MemoryChannel::new(
        name,
        MemoryChannelConfig {
            capacity,
            capacity_bytes: 1 << 20,
        },
    ))
}

fn origin(path: &str, headers: &[(&str, &str)]) -> Arc<Origin> {
    Arc::new(Origin {
        source: "r1".into(),
        path: path.into(),
        file: path.into(),
        host: "h".into(),
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    })
}

/// Events `0..n` of `origin`, the body the offset as text.
fn events(origin: &Arc<Origin>, range: std::ops::Range<u64>) -> Vec<Event> {
    range
        .map(|o| Event {
            body: Bytes::from(o.to_string()),
            origin: origin.clone(),
            offset: o,
            read_at_ms: 0,
            headers: Default::default(),
        })
        .collect()
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn dyns(channels: &[&Arc<MemoryChannel>]) -> Vec<Arc<dyn Channel>> {
    channels
        .iter()
        .map(|c| (*c).clone() as Arc<dyn Channel>)
        .collect()
}

/// Takes and commits everything `ch` holds; returns the (path, offset) of each event.
async fn drain(ch: &MemoryChannel) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    while ch.stats().events > 0 {
        let lease = ch.take(1000).await.unwrap().unwrap();
        out.extend(
            lease
                .events
                .iter()
                .map(|e| (e.origin.path.clone(), e.offset)),
        );
        ch.commit(lease).await.unwrap();
    }
    out
}

#[tokio::test]
async fn replicating_puts_every_event_into_every_channel_and_waits_for_all() {
    let (c1, c2) = (channel("c1", 100), channel("c2", 100));
    let f = Fanout::new(dyns(&[&c1, &c2]), &SelectorConfig::default()).unwrap();
    let m = SourceMetrics::default();
    let o = origin("/a", &[]);
    let r = f.put(events(&o, 0..3), &m).await.unwrap();
    assert_eq!(c1.stats().events, 3);
    assert_eq!(c2.stats().events, 3);
    assert_eq!(drain(&c1).await.len(), 3);
    assert!(!r.is_safe(), "c2 has not made the batch safe yet");
    assert_eq!(drain(&c2).await.len(), 3);
    assert!(r.is_safe());
}

#[tokio::test]
async fn a_full_optional_channel_does_not_hold_the_source_back() {
    let (c1, c2) = (channel("c1", 100), channel("c2", 2));
    let selector = SelectorConfig {
        optional: Optional::List(names(&["c2"])),
        ..SelectorConfig::default()
    };
    let f = Fanout::new(dyns(&[&c1, &c2]), &selector).unwrap();
    let m = SourceMetrics::default();
    let o = origin("/a", &[]);
    let r1 = f.put(events(&o, 0..2), &m).await.unwrap();
    // c2 is full now: the next puts do not wait for it, and it misses their events.
    let put = f.put(events(&o, 2..5), &m);
    let r2 = tokio::time::timeout(Duration::from_secs(5), put)
        .await
        .expect("a full optional channel made the put wait")
        .unwrap();
    assert_eq!(SourceMetrics::get(&m.optional_missed), 3);
    assert_eq!(c2.stats().events, 2);
    assert_eq!(c1.stats().events, 5);
    // The optional channel's receipt is not part of the batch's.
    drain(&c1).await;
    assert!(r1.is_safe() && r2.is_safe());
    c2.close();
    f.put(events(&o, 5..6), &m).await.unwrap();
    assert_eq!(
        SourceMetrics::get(&m.optional_missed),
        4,
        "a closed optional channel misses events too"
    );
    assert_eq!(drain(&c2).await, vec![("/a".into(), 0), ("/a".into(), 1)]);
}

#[tokio::test]
async fn a_full_required_channel_holds_the_source_back() {
    let (c1, c2) = (channel("c1", 2), channel("c2", 100));
    let f = Fanout::new(dyns(&[&c1, &c2]), &SelectorConfig::default()).unwrap();
    let m = SourceMetrics::default();
    let o = origin("/a", &[]);
    f.put(events(&o, 0..2), &m).await.unwrap();
    let put = f.put(events(&o, 2..3), &m);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), put)
            .await
            .is_err()
    );
}

fn multiplexing() -> SelectorConfig {
    SelectorConfig {
        kind: SelectorKind::Multiplexing,
        header: Some("level".into()),
        mapping: BTreeMap::from([
            ("ERROR".into(), names(&["c1"])),
            ("WARN".into(), names(&["c1", "c2"])),
        ]),
        default: names(&["c2"]),
        optional: Optional::ByValue(BTreeMap::from([
            ("ERROR".into(), names(&["c3"])),
            ("WARN".into(), names(&["c2", "c3"])),
        ])),
    }
}

#[tokio::test]
async fn multiplexing_routes_by_header_with_default_and_optional_channels() {
    let (c1, c2, c3) = (channel("c1", 100), channel("c2", 100), channel("c3", 100));
    let f = Fanout::new(dyns(&[&c1, &c2, &c3]), &multiplexing()).unwrap();
    let m = SourceMetrics::default();
    let error = origin("/error", &[("level", "ERROR")]);
    let warn = origin("/warn", &[("level", "WARN")]);
    let info = origin("/info", &[("level", "INFO")]);
    let none = origin("/none", &[]);
    let blank = origin("/blank", &[("level", " ")]);
    let mut batch = events(&error, 0..2);
    batch.extend(events(&info, 0..1));
    batch.extend(events(&warn, 0..1));
    batch.extend(events(&none, 0..1));
    batch.extend(events(&blank, 0..1));
    batch.extend(events(&error, 2..3));
    let r = f.put(batch, &m).await.unwrap();
    let p = |path: &str, o: u64| (path.to_owned(), o);
    assert_eq!(
        drain(&c1).await,
        vec![
            p("/error", 0),
            p("/error", 1),
            p("/warn", 0),
            p("/error", 2)
        ]
    );
    assert!(!r.is_safe(), "c2 holds required events too");
    assert_eq!(
        drain(&c2).await,
        vec![p("/info", 0), p("/warn", 0), p("/none", 0), p("/blank", 0)],
        "no mapping, no header or a blank value: the default; WARN's c2 is required, not twice"
    );
    assert!(r.is_safe(), "c3 is only ever optional");
    assert_eq!(
        drain(&c3).await,
        vec![
            p("/error", 0),
            p("/error", 1),
            p("/warn", 0),
            p("/error", 2)
        ]
    );
}

#[tokio::test]
async fn events_no_route_takes_are_counted_and_the_batch_resolves_after_the_earlier_ones() {
    let (c1, c2) = (channel("c1", 100), channel("c2", 100));
    let selector = SelectorConfig {
        kind: SelectorKind::Multiplexing,
        header: Some("level".into()),
        mapping: BTreeMap::from([("ERROR".into(), names(&["c1"]))]),
        optional: Optional::ByValue(BTreeMap::from([("DEBUG".into(), names(&["c2"]))])),
        ..SelectorConfig::default()
    };
    let f = Fanout::new(dyns(&[&c1, &c2]), &selector).unwrap();
    let m = SourceMetrics::default();
    let error = origin("/e", &[("level", "ERROR")]);
    let debug = origin("/d", &[("level", "DEBUG")]);
    let info = origin("/i", &[("level", "INFO")]);
    let first = f.put(events(&error, 0..2), &m).await.unwrap();
    let to_optional = f.put(events(&debug, 0..2), &m).await.unwrap();
    let to_nowhere = f.put(events(&info, 0..3), &m).await.unwrap();
    assert_eq!(SourceMetrics::get(&m.unrouted), 3);
    assert_eq!(c2.stats().events, 2);
    assert!(
        !to_optional.is_safe() && !to_nowhere.is_safe(),
        "no required part: safe only once the earlier batch is"
    );
    drain(&c1).await;
    assert!(first.is_safe() && to_optional.is_safe() && to_nowhere.is_safe());
    let mut later = f.put(events(&info, 3..4), &m).await.unwrap();
    assert!(later.wait().await, "nothing earlier waits: safe at once");
}

#[tokio::test]
async fn a_batch_with_no_required_part_waits_for_every_channel_of_earlier_batches() {
    let (c1, c2, c3) = (channel("c1", 100), channel("c2", 100), channel("c3", 100));
    let selector = SelectorConfig {
        kind: SelectorKind::Multiplexing,
        header: Some("to".into()),
        mapping: BTreeMap::from([("1".into(), names(&["c1"])), ("2".into(), names(&["c2"]))]),
        optional: Optional::ByValue(BTreeMap::from([("3".into(), names(&["c3"]))])),
        ..SelectorConfig::default()
    };
    let f = Fanout::new(dyns(&[&c1, &c2, &c3]), &selector).unwrap();
    let m = SourceMetrics::default();
    f.put(events(&origin("/1", &[("to", "1")]), 0..1), &m)
        .await
        .unwrap();
    f.put(events(&origin("/2", &[("to", "2")]), 0..1), &m)
        .await
        .unwrap();
    let mut optional_only = f
        .put(events(&origin("/3", &[("to", "3")]), 0..1), &m)
        .await
        .unwrap();
    drain(&c2).await;
    assert!(
        !optional_only.is_safe(),
        "the batch put into c1 is not safe yet"
    );
    drain(&c1).await;
    assert!(optional_only.wait().await);
}

#[tokio::test]
async fn a_combined_receipt_resolves_only_when_every_required_part_has() {
    let (c1, c2) = (channel("c1", 100), channel("c2", 100));
    let f = Fanout::new(dyns(&[&c1, &c2]), &SelectorConfig::default()).unwrap();
    let m = SourceMetrics::default();
    let mut r = f.put(events(&origin("/a", &[]), 0..4), &m).await.unwrap();
    drain(&c2).await;
    assert!(!r.is_safe());
    let wait = tokio::spawn(async move { r.wait().await });
    tokio::task::yield_now().await;
    assert!(!wait.is_finished());
    drain(&c1).await;
    assert!(wait.await.unwrap());
}

#[test]
fn partition_is_fnv1a_of_the_stream_key_and_stable() {
    // The published FNV-1a 64 test vectors, through a modulus that keeps the whole hash.
    for (key, hash) in [
        ("", 0xcbf2_9ce4_8422_2325u64),
        ("a", 0xaf63_dc4c_8601_ec8c),
        ("foobar", 0x8594_4171_f739_67e8),
    ] {
        assert_eq!(partition(key, usize::MAX) as u64, hash % usize::MAX as u64);
    }
    // Fixed values a release must keep, or files change channels on an upgrade.
    let got: Vec<(usize, usize)> = ["a", "b", "c", "d"]
        .iter()
        .map(|f| format!("/var/log/app/{f}.log"))
        .map(|k| (partition(&k, 2), partition(&k, 3)))
        .collect();
    assert_eq!(got, vec![(0, 0), (1, 1), (0, 0), (1, 0)]);
}

#[tokio::test]
async fn partitioned_keeps_each_file_in_one_channel_in_order() {
    let (c1, c2) = (channel("c1", 1000), channel("c2", 1000));
    let selector = SelectorConfig {
        kind: SelectorKind::Partitioned,
        ..SelectorConfig::default()
    };
    let f = Fanout::new(dyns(&[&c1, &c2]), &selector).unwrap();
    let m = SourceMetrics::default();
    let files: Vec<Arc<Origin>> = (0..8).map(|i| origin(&format!("/f{i}"), &[])).collect();
    for round in 0..3u64 {
        let mut batch = Vec::new();
        for (i, o) in files.iter().enumerate() {
            // Interleaved, and a fresh origin now and then (a reopened file): same key.
            let o = if round == 1 && i % 2 == 0 {
                origin(&o.path, &[])
            } else {
                o.clone()
            };
            batch.extend(events(&o, round * 10..round * 10 + 3));
        }
        f.put(batch, &m).await.unwrap();
    }
    let (got1, got2) = (drain(&c1).await, drain(&c2).await);
    assert!(
        !got1.is_empty() && !got2.is_empty(),
        "8 files spread over both"
    );
    for (i, o) in files.iter().enumerate() {
        let want: Vec<(String, u64)> = (0..3u64)
            .flat_map(|r| (r * 10..r * 10 + 3).map(|x| (o.path.clone(), x)))
            .collect();
        let (mine, other) = if partition(&o.path, 2) == 0 {
            (&got1, &got2)
        } else {
            (&got2, &got1)
        };
        let in_mine: Vec<_> = mine.iter().filter(|(p, _)| *p == o.path).cloned().collect();
        assert_eq!(in_mine, want, "file {i} whole and in order in its channel");
        assert!(!other.iter().any(|(p, _)| *p == o.path));
    }
}

#[test]
fn a_selector_naming_a_channel_the_source_lacks_is_refused() {
    let c1: Arc<dyn Channel> = channel("c1", 10);
    let e = Fanout::new(vec![c1], &multiplexing()).err().unwrap();
    assert!(matches!(e, FanoutError::UnknownChannel(c) if c == "c2"));
}
