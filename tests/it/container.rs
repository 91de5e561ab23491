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
