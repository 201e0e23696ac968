//! Every committed corpus entry (`fuzz/corpus/<target>/`) through its target, on the stable
//! toolchain: what a fuzzing campaign found and we fixed stays fixed.

use std::path::Path;

#[test]
fn every_corpus_entry_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut total = 0;
    for (name, target) in remora_fuzz_targets::TARGETS {
        let dir = root.join(name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            panic!("no corpus for {name} at {}", dir.display());
        };
        let mut n = 0;
        for e in entries.flatten() {
            let data = std::fs::read(e.path()).expect("read a corpus entry");
            target(&data);
            n += 1;
        }
        assert!(n > 0, "the corpus of {name} is empty");
        total += n;
    }
    eprintln!("replayed {total} corpus entries");
}
