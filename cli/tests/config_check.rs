//! `conveyor config check` as an operator runs it: what a valid file means (freeze windows
//! included), and every problem of a broken one with its key.

use std::process::Command;

fn check(text: &str) -> (bool, String) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_conveyor"))
        .args(["config", "check"])
        .arg(file.path())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn pipeline(freeze: &str) -> String {
    include_str!("../../conveyor.toml").replace(
        "url = \"https://fragalysis.diamond.ac.uk\"",
        &format!("url = \"https://fragalysis.diamond.ac.uk\"\nfreeze = {freeze}"),
    )
}

#[test]
fn freeze_windows_are_checked_and_said() {
    // The window that always holds comes first: the first window that holds is the one said,
    // and the weekly one holds too when this runs on a weekend.
    let (ok, out) = check(&pipeline(
        r#"[{ from = "2020-01-01 00:00", to = "2100-01-01 00:00" }, { from = "Fri 16:00", to = "Mon 08:00", timezone = "Europe/London", reason = "weekend" }]"#,
    ));
    assert!(ok, "{out}");
    assert!(
        out.contains("production is frozen from Fri 16:00 to Mon 08:00 Europe/London (weekend)"),
        "{out}"
    );
    assert!(
        out.contains("it is frozen now: frozen from 2020-01-01 00:00 to 2100-01-01 00:00 UTC"),
        "{out}"
    );

    let (ok, out) = check(&pipeline(
        r#"[{ from = "Fri 16:00", to = "Mon 08:00", timezone = "Europe/Lundun" }, { from = "Friday", to = "Mon 08:00" }]"#,
    ));
    assert!(!ok, "{out}");
    assert!(
        out.contains("environment[1].freeze[0]: \"Europe/Lundun\" is not a known IANA time zone"),
        "{out}"
    );
    assert!(
        out.contains("environment[1].freeze[1]: \"Friday\" is neither"),
        "{out}"
    );
}
