//! The packaging files (packaging/): the systemd unit parses, and every
//! doozerd command line in the unit, the Dockerfile and the compose file is
//! one doozerd accepts. (The image itself needs a container daemon and the
//! base images, which CI does not have.)

use std::process::Command;

fn file(name: &str) -> String {
    std::fs::read_to_string(format!("{}/packaging/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Runs doozerd with `args` and `-v`: it parses every flag, then prints its version.
fn accepts(args: &[String]) {
    let out = Command::new(env!("CARGO_BIN_EXE_doozerd")).args(args).arg("-v").output().unwrap();
    assert!(out.status.success(), "doozerd {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The strings of every JSON-style array `["a", "b"]` on lines starting with `prefix`.
fn arrays(text: &str, prefix: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter_map(|l| l.trim_start().strip_prefix(prefix))
        .filter_map(|rest| {
            let inner = rest.trim().strip_prefix('[')?.strip_suffix(']')?;
            Some(inner.split(',').map(|s| s.trim().trim_matches('"').to_string()).collect())
        })
        .collect()
}

#[test]
fn compose_and_dockerfile_command_lines_parse() {
    let commands = arrays(&file("compose.yaml"), "command:");
    assert_eq!(commands.len(), 3, "three nodes");
    for args in &commands {
        accepts(args);
    }
    let cmd = arrays(&file("Dockerfile"), "CMD");
    assert_eq!(cmd.len(), 1);
    accepts(&cmd[0]);
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = file("doozerd.service");
    let line = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap();
    assert!(line.starts_with("/usr/local/bin/doozerd "));
    let example = unit.lines().find_map(|l| l.strip_prefix("#   DOOZERD_ARGS=")).unwrap().trim_matches('"');
    accepts(&example.split_whitespace().map(String::from).collect::<Vec<_>>());
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not installed: the unit's syntax is not checked");
        return;
    };
    assert!(probe.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doozerd.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/doozerd", env!("CARGO_BIN_EXE_doozerd"))).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !stderr.contains(".service:"), "{stderr}");
}
