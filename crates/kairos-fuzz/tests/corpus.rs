//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`, kept for its coverage) and the
//! inputs that found bugs (`fuzz/regressions/<target>/`) through the fuzz entry points on
//! stable, in CI.

use std::path::Path;

#[test]
fn every_corpus_input_passes() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut replayed = 0;
    for (name, target) in kairos_fuzz::TARGETS {
        let corpus = inputs(&fuzz.join("corpus").join(name));
        assert!(!corpus.is_empty(), "the corpus of `{name}` is empty");
        // Inputs that found bugs, kept apart because minimizing the corpus may drop them.
        let regressions = inputs(&fuzz.join("regressions").join(name));
        for file in corpus.into_iter().chain(regressions) {
            let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "`{name}` failed on {}", file.display());
            replayed += 1;
        }
    }
    assert!(replayed > 0);
}

/// The files of `dir`, sorted (none if it does not exist).
fn inputs(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}
