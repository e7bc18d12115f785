//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the fuzz entry points on
//! stable: every input that once found a bug, or that fuzzing kept for its coverage, stays a
//! test in CI.

use std::path::Path;

#[test]
fn every_corpus_input_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let mut replayed = 0;
    for (name, target) in kairos_fuzz::TARGETS {
        let dir = root.join(name);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("no corpus for `{name}` at {}: {e}", dir.display()));
        let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        files.sort();
        assert!(!files.is_empty(), "the corpus of `{name}` is empty");
        for file in files {
            let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "`{name}` failed on {}", file.display());
            replayed += 1;
        }
    }
    assert!(replayed > 0);
}
