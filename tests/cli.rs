//! End-to-end checks of the `sluice` command line: help, version, and `validate` on every
//! example configuration in `conf/`.

mod support;

use std::fs;

use support::agent::{repo_root, sluice};

#[test]
fn help_and_version_work() {
    let (code, out, _) = sluice(&["--help"]);
    assert_eq!(code, 0);
    for word in ["agent", "validate", "--log-level", "--log-format"] {
        assert!(out.contains(word), "--help lacks {word}:\n{out}");
    }
    let (code, out, _) = sluice(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("sluice "), "{out}");
    let (code, out, _) = sluice(&["agent", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("-n") && out.contains("-f"), "{out}");
}

#[test]
fn every_example_configuration_is_valid() {
    let mut checked = 0;
    for entry in fs::read_dir(repo_root().join("conf")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let (code, out, err) = sluice(&["validate", "-f", path.to_str().unwrap()]);
            assert_eq!(code, 0, "{}: {out}{err}", path.display());
            assert!(out.contains("is valid"), "{out}");
            checked += 1;
        }
    }
    assert!(checked >= 1, "no configuration found in conf/");
}

#[test]
fn validate_names_the_exact_key_and_exits_non_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("bad.yaml");
    fs::write(
        &conf,
        "a1:\n  sources:\n    r1: { type: spooldir, dir: /tmp, channel: c1, colour: red }\n  channels:\n    c1: { type: memory }\n  sinks:\n    k1: { type: console, channel: c2 }\n",
    )
    .unwrap();
    let (code, _, err) = sluice(&["validate", "-f", conf.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("a1.sources.r1.colour: unknown key"), "{err}");
    assert!(
        err.contains("a1.sinks.k1.channel: no channel named `c2`"),
        "{err}"
    );
    // `agent` refuses to start on the same file, with the same words.
    let (code, _, err) = sluice(&["agent", "-n", "a1", "-f", conf.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("a1.sources.r1.colour: unknown key"), "{err}");
    let (code, _, err) = sluice(&["validate", "-f", conf.to_str().unwrap(), "-n", "zz"]);
    assert_ne!(code, 0);
    assert!(err.contains("zz: no such agent"), "{err}");
}
