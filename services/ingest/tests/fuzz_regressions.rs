//! The fuzz corpus and every crash the fuzzers found, replayed through the same entry points as
//! the `cargo fuzz` targets (`fuzz/inputs.rs`), without sanitizers, on every test run: a parser
//! that panics again on a kept input fails here.

#[path = "../../../fuzz/inputs.rs"]
mod inputs;

use std::path::Path;

/// A fuzz target's entry point.
type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 4] = [
    ("github_webhook", inputs::github_webhook),
    ("registry_webhook", inputs::registry_webhook),
    ("awx_notification", inputs::awx_notification),
    ("event_envelope", inputs::event_envelope),
];

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn every_kept_fuzz_input_is_refused_or_accepted_without_a_panic() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    for (target, run) in TARGETS {
        let corpus = files(&fuzz.join("corpus").join(target));
        assert!(
            corpus.len() >= 10,
            "fuzz/corpus/{target} holds {} inputs; scripts/fuzz keeps the corpus",
            corpus.len()
        );
        let crashes = files(&fuzz.join("regressions").join(target));
        for path in corpus.iter().chain(&crashes) {
            let data = std::fs::read(path).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{target} panicked on {}", path.display());
        }
    }
}
