//! The `conveyor-sim` binary refuses to start without its credentials and names what is missing.

use std::process::Command;

#[test]
fn all_without_credentials_names_the_missing_variable() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../conveyor.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_conveyor-sim"))
        .args(["all", "--config", config])
        .env_remove("GITHUB_TOKEN")
        .env_remove("GITHUB_TOKEN_FILE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("GITHUB_TOKEN is not set"), "{err}");
}
