//! The deployment files in `deploy/`: every Kubernetes manifest passes the Kubernetes schemas
//! (`kubernetes-validate --strict`, installed by `scripts/install-deps`), the config embedded in
//! each ConfigMap passes `sluice validate` and agrees with its pod (grace period, mounts,
//! sandbox); the systemd unit passes `systemd-analyze verify`; the binary runs in the container
//! image's layout (`deploy/check-image`); the Dockerfile keeps its promises.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use support::agent::{repo_root, sluice_bin};

/// Runs `cmd`, returning (success, stdout, stderr).
fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every YAML document of `text`, as JSON (read by PyYAML, which kubernetes-validate brings).
fn yaml_documents(text: &str) -> Vec<Value> {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump(list(yaml.safe_load_all(sys.stdin)), sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (scripts/install-deps installs its yaml module)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "cannot read YAML: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The manifests in deploy/kubernetes/.
fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(repo_root().join("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "no manifests found: {files:?}");
    files
}

#[test]
fn every_kubernetes_manifest_passes_the_schemas() {
    for file in manifests() {
        let (ok, out, err) = run(Command::new("python3")
            .args(["-m", "kubernetes_validate", "--strict"])
            .arg(&file));
        assert!(
            ok,
            "{}: kubernetes-validate --strict failed (scripts/install-deps installs it):\n{out}{err}",
            file.display()
        );
        let docs = yaml_documents(&fs::read_to_string(&file).unwrap());
        assert_eq!(
            out.matches(" passed for resource ").count(),
            docs.len(),
            "{}: every document is checked:\n{out}{err}",
            file.display()
        );
    }
}

#[test]
fn a_manifest_off_the_schema_fails_the_check() {
    // The check itself can fail: an unknown field in a pod spec is refused.
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.yaml");
    let text = fs::read_to_string(repo_root().join("deploy/kubernetes/sidecar.yaml")).unwrap();
    fs::write(
        &bad,
        text.replace(
            "terminationGracePeriodSeconds: 45",
            "terminationGracePeriodSeconds: 45\n      terminationGraceSeconds: 45",
        ),
    )
    .unwrap();
    let (ok, out, err) = run(Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict"])
        .arg(&bad));
    assert!(!ok, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("'terminationGraceSeconds' was unexpected"),
        "{out}{err}"
    );
}

/// Seconds of a duration written as `Ns` or `Nm`.
fn seconds(d: &str) -> u64 {
    if let Some(s) = d.strip_suffix('s') {
        s.parse().unwrap()
    } else if let Some(m) = d.strip_suffix('m') {
        m.parse::<u64>().unwrap() * 60
    } else {
        panic!("unexpected duration {d}")
    }
}

/// The mount of `container` whose path holds `path`: (mount path, read-only).
fn mount_of<'a>(container: &'a Value, path: &str) -> Option<(&'a str, bool)> {
    container["volumeMounts"]
        .as_array()?
        .iter()
        .filter_map(|m| {
            let at = m["mountPath"].as_str()?;
            (path == at || path.starts_with(&format!("{at}/")))
                .then(|| (at, m["readOnly"].as_bool().unwrap_or(false)))
        })
        .max_by_key(|(at, _)| at.len())
}

#[test]
fn every_configmap_config_validates_and_fits_its_pod() {
    let tmp = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for file in manifests() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let docs = yaml_documents(&fs::read_to_string(&file).unwrap());
        let configmaps: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "ConfigMap").collect();
        assert!(!configmaps.is_empty(), "{name}: no ConfigMap");
        let workload = docs
            .iter()
            .find(|d| d["kind"] == "Deployment" || d["kind"] == "DaemonSet")
            .unwrap_or_else(|| panic!("{name}: no Deployment or DaemonSet"));
        let pod = &workload["spec"]["template"]["spec"];
        // The Sluice container: a native sidecar (an init container that keeps running) or a
        // plain container.
        let (sluice, native) = pod["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| (c, true))
            .chain(
                pod["containers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| (c, false)),
            )
            .find(|(c, _)| c["image"].as_str().unwrap_or("").starts_with("sluice"))
            .unwrap_or_else(|| panic!("{name}: no sluice container"));
        if native {
            assert_eq!(
                sluice["restartPolicy"], "Always",
                "{name}: a native sidecar"
            );
        }
        let args: Vec<&str> = sluice["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(args[0], "agent", "{name}: {args:?}");
        let agent = args[args.iter().position(|a| *a == "-n").unwrap() + 1];
        let conf_path = args[args.iter().position(|a| *a == "-f").unwrap() + 1];
        let sc = &sluice["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(
            sc["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{name}"
        );
        for probe in ["livenessProbe", "readinessProbe"] {
            assert!(sluice[probe].is_object(), "{name}: no {probe}");
        }
        assert!(
            sluice["resources"]["limits"]["memory"].is_string(),
            "{name}"
        );
        let (conf_mount, _) = mount_of(sluice, conf_path)
            .unwrap_or_else(|| panic!("{name}: {conf_path} is not on a mount"));
        for cm in configmaps {
            for (key, text) in cm["data"].as_object().unwrap() {
                let text = text.as_str().unwrap();
                let conf = tmp.path().join(format!("{name}-{key}"));
                fs::write(&conf, text).unwrap();
                let (ok, out, err) = run(Command::new(sluice_bin())
                    .args(["validate", "-n", agent, "-f"])
                    .arg(&conf)
                    .env_remove("RUST_LOG")
                    .env("KAFKA_BROKERS", "kafka-0:9092,kafka-1:9092"));
                assert!(ok, "{name}: ConfigMap key {key}:\n{out}{err}");
                assert!(err.is_empty(), "{name}: {key}: no warning expected:\n{err}");
                // Without the brokers the agent does not start with a default.
                let (ok, _, err) = run(Command::new(sluice_bin())
                    .args(["validate", "-n", agent, "-f"])
                    .arg(&conf)
                    .env_remove("RUST_LOG")
                    .env_remove("KAFKA_BROKERS"));
                assert!(!ok && err.contains("KAFKA_BROKERS"), "{name}: {err}");
                assert_eq!(
                    conf_path,
                    format!("{conf_mount}/{key}"),
                    "{name}: -f names the ConfigMap key"
                );
                let config = &yaml_documents(text)[0][agent];
                let shutdown = seconds(config["shutdown_timeout"].as_str().unwrap());
                let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
                assert!(
                    grace >= shutdown + 10,
                    "{name}: terminationGracePeriodSeconds {grace} leaves no margin over shutdown_timeout {shutdown}s"
                );
                let data_dir = config["data_dir"].as_str().unwrap();
                match mount_of(sluice, data_dir) {
                    Some((_, false)) => {}
                    other => {
                        panic!("{name}: data_dir {data_dir} not on a writable mount: {other:?}")
                    }
                }
                let http = config["http"].as_str().unwrap();
                let port = http.rsplit(':').next().unwrap().parse::<u64>().unwrap();
                assert!(
                    sluice["ports"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["containerPort"] == port),
                    "{name}: the http port {port} is declared"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 2, "configs checked: {checked}");
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = repo_root().join("deploy/systemd/sluice.service");
    let text = fs::read_to_string(&unit).unwrap();
    for line in [
        "ExecStart=/usr/local/bin/sluice agent -n a1 -f /etc/sluice/sluice.yaml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/sluice",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "CapabilityBoundingSet=",
        "Restart=on-failure",
        "User=sluice",
    ] {
        assert!(text.lines().any(|l| l == line), "the unit lacks `{line}`");
    }
    let stop = text
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .expect("TimeoutStopSec");
    assert!(seconds(stop) > 30, "above the default shutdown_timeout");
    let Ok(path) = which("systemd-analyze") else {
        eprintln!("SKIPPED: systemd-analyze is not installed; the unit was not verified");
        return;
    };
    // verify checks that ExecStart's binary exists: the copy runs the one just built.
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("sluice.service");
    fs::write(
        &copy,
        text.replace("/usr/local/bin/sluice", sluice_bin().to_str().unwrap()),
    )
    .unwrap();
    let (ok, out, err) = run(Command::new(&path).arg("verify").arg(&copy));
    // verify exits 0 on unknown or misspelt keys, but names them on stderr.
    assert!(ok && err.is_empty(), "systemd-analyze verify:\n{out}{err}");
    let (ok, out, err) = run(Command::new(&path)
        .args(["security", "--offline=true"])
        .arg(&copy));
    let exposure: f64 = out
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for sluice.service: ")
                .nth(1)
        })
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("systemd-analyze security ({ok}):\n{out}{err}"));
    assert!(exposure <= 2.5, "exposure {exposure}:\n{out}");
}

/// `cmd` on PATH.
fn which(cmd: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
        .ok_or(())
}

#[test]
fn the_binary_runs_in_the_image_layout() {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("SKIPPED: deploy/check-image needs root (chroot)");
        return;
    }
    let (ok, out, err) =
        run(Command::new(repo_root().join("deploy/check-image")).arg(sluice_bin()));
    assert!(ok, "deploy/check-image:\n{out}{err}");
    assert!(out.trim_end().ends_with("check-image: PASS"), "{out}{err}");
}

#[test]
fn the_dockerfile_keeps_its_promises() {
    let root = repo_root();
    let text = fs::read_to_string(root.join("deploy/Dockerfile")).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let has = |l: &str| lines.iter().any(|x| x.trim() == l);
    assert!(has("ENTRYPOINT [\"/usr/local/bin/sluice\"]"));
    assert!(has("ARG BUILDER_IMAGE=docker.io/library/rust:1-bookworm"));
    assert!(has(
        "ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim"
    ));
    assert!(has("FROM ${BUILDER_IMAGE} AS build"));
    assert!(has("FROM ${RUNTIME_IMAGE}"));
    assert!(has("USER 10001:10001"), "a numeric, non-root user");
    assert!(
        text.contains("CMD [\"/usr/local/bin/sluice\", \"health\""),
        "the HEALTHCHECK runs `sluice health` without a shell"
    );
    assert!(text.contains("VOLUME [\"/etc/sluice\", \"/var/lib/sluice\""));
    // Every file copied from the context exists (a rename would break the build).
    for l in &lines {
        if let Some(rest) = l.strip_prefix("COPY ") {
            if rest.starts_with("--from") || rest.starts_with(". ") {
                continue;
            }
            let src = rest.split_whitespace().next().unwrap();
            assert!(
                Path::new(&root.join(src)).exists(),
                "COPY {src}: no such file"
            );
        }
    }
    // The build installs with the repository's script, in its build-only mode.
    assert!(has("RUN scripts/install-deps --build"));
    let (ok, _, err) = run(Command::new("bash")
        .arg("-n")
        .arg(root.join("scripts/install-deps")));
    assert!(ok, "{err}");
    assert!(root.join(".dockerignore").exists());
}
