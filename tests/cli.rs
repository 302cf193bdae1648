//! The command line as a user meets it: help, version, and usage errors. (Also makes
//! `cargo test --workspace` build the `fetchfs` binary the mount tests run.)

use std::process::Command;

fn fetchfs(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fetchfs")).args(args).output().expect("run fetchfs")
}

#[test]
fn version_names_the_program() {
    let out = fetchfs(&["--version"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("fetchfs {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn mount_help_documents_every_option() {
    let out = fetchfs(&["mount", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for option in [
        "--prefix",
        "--endpoint-url",
        "--region",
        "--force-path-style",
        "--profile",
        "--no-sign-request",
        "--foreground",
        "--allow-other",
        "--allow-root",
        "--uid",
        "--gid",
        "--file-mode",
        "--dir-mode",
        "--read-only",
        "--requester-pays",
        "--ca-bundle",
        "--cache-size",
        "--max-readahead",
        "--part-size",
        "--max-connections",
        "--metadata-ttl",
        "--log-level",
        "--debug",
        "--log-file",
    ] {
        assert!(help.contains(option), "mount --help lacks {option}");
    }
}

#[test]
fn missing_arguments_are_a_usage_error() {
    let out = fetchfs(&["mount"]);
    assert_eq!(out.status.code(), Some(2), "clap's usage errors exit with 2");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage"));
}
