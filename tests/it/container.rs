//! The container image: the Dockerfile lints clean with hadolint, and its runtime stage, built
//! with podman from the binary under test, runs `deploy-journey --version` as a non-root user.
//! Needs what `scripts/test` installs (`.venv` with hadolint, podman, runc, debootstrap, root).

use std::path::Path;
use std::process::Command;

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

fn hadolint(dockerfile: &Path) -> std::process::Output {
    let bin = Path::new(MANIFEST).join(".venv/bin/hadolint");
    assert!(
        bin.exists(),
        "{} is missing: run ./scripts/test, which installs scripts/py-requirements.txt",
        bin.display()
    );
    Command::new(bin).args(["--no-color"]).arg(dockerfile).output().expect("run hadolint")
}

#[test]
fn dockerfile_is_hadolint_clean() {
    let out = hadolint(&Path::new(MANIFEST).join("Dockerfile"));
    assert!(
        out.status.success(),
        "hadolint findings:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn hadolint_rejects_a_worse_dockerfile() {
    // The lint above can fail: the same file with an unpinned, recommends-pulling install fails.
    let text = std::fs::read_to_string(Path::new(MANIFEST).join("Dockerfile")).unwrap();
    let worse = text
        .replace("# hadolint ignore=DL3008\n", "")
        .replace("apt-get install -y --no-install-recommends", "apt-get install -y");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Dockerfile");
    std::fs::write(&path, worse).unwrap();
    let out = hadolint(&path);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(text.contains("DL3008") && text.contains("DL3015"), "{text}");
}

#[test]
fn runtime_stage_runs_the_binary_as_non_root() {
    let out = Command::new(Path::new(MANIFEST).join("scripts/container-smoke"))
        .arg(env!("CARGO_BIN_EXE_deploy-journey"))
        .output()
        .expect("run scripts/container-smoke");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "container-smoke failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let line = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}: ")))
            .unwrap_or_else(|| panic!("no `{key}:` line in:\n{stdout}"))
            .trim()
            .to_string()
    };
    assert_eq!(line("version"), format!("deploy-journey {}", env!("CARGO_PKG_VERSION")));
    assert_eq!(line("uid"), "10001");
    assert_eq!(line("user"), "10001:10001");
    assert_eq!(line("exposed"), "9853/tcp");
}

/// All documents of a YAML file, as JSON values.
fn yaml_docs(path: &Path) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::Deserializer::from_str(&text)
        .map(|d| serde_json::Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

/// The Kubernetes example hangs together: the ConfigMap holds a valid config whose secrets are
/// exactly the Secret's keys, the ports and probes match what the binary serves, the pod runs as
/// the image's user, and the stages are those of examples/lana.yaml.
#[test]
fn kubernetes_example_is_consistent() {
    let dir = Path::new(MANIFEST).join("examples/kubernetes");
    let kustomization = &yaml_docs(&dir.join("kustomization.yaml"))[0];
    let mut docs = vec![];
    for f in kustomization["resources"].as_array().unwrap() {
        docs.extend(yaml_docs(&dir.join(f.as_str().unwrap())));
    }
    let find = |kind: &str| -> &serde_json::Value {
        docs.iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind} in examples/kubernetes"))
    };
    let (cm, secret, deploy, svc, sm) =
        (find("ConfigMap"), find("Secret"), find("Deployment"), find("Service"), find("ServiceMonitor"));
    let secret_keys: Vec<String> = secret["stringData"].as_object().unwrap().keys().cloned().collect();
    let config_text = cm["data"]["config.yaml"].as_str().unwrap();
    // Only the Secret's keys are in the pod's environment.
    let env = |k: &str| secret_keys.iter().any(|s| s == k).then(|| "x".to_string());
    let cfg = deploy_journey::config::parse(config_text, "examples/kubernetes/configmap.yaml", &env)
        .unwrap_or_else(|e| panic!("{e}"));
    for k in ["GITHUB_TOKEN", "CONCOURSE_PASSWORD"] {
        assert!(secret_keys.contains(&k.to_string()), "Secret lacks {k}");
    }
    let lana = deploy_journey::config::load(&Path::new(MANIFEST).join("examples/lana.yaml"), &|_| Some("x".into()))
        .unwrap_or_else(|e| panic!("{e}"));
    let names = |c: &deploy_journey::config::Config| c.stages.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&cfg), names(&lana), "configmap stages drifted from examples/lana.yaml");
    assert!(cfg.state_path.starts_with("/var/lib/deploy-journey"));

    let pod = &deploy["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(pod["securityContext"]["runAsUser"], 10001);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["ports"][0]["containerPort"].as_u64(), Some(cfg.listen.port() as u64));
    assert_eq!(c["envFrom"][0]["secretRef"]["name"], secret["metadata"]["name"]);
    assert_eq!(c["args"][2], "/etc/deploy-journey/config.yaml");
    assert!(c["volumeMounts"].as_array().unwrap().iter().any(|m| m["mountPath"] == "/etc/deploy-journey"));
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    let port_name = &c["ports"][0]["name"];
    assert_eq!(&svc["spec"]["ports"][0]["targetPort"], port_name);
    assert_eq!(&sm["spec"]["endpoints"][0]["port"], &svc["spec"]["ports"][0]["name"]);
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    let dockerfile = std::fs::read_to_string(Path::new(MANIFEST).join("Dockerfile")).unwrap();
    assert!(dockerfile.contains(&format!("EXPOSE {}", cfg.listen.port())));
}
