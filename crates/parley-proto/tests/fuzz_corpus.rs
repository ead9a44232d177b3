//! Replays the fuzz seed corpus (`fuzz/corpus/<target>/*`) through the fuzz target bodies, so
//! `cargo test` checks every seed (and every regression input added next to them) without
//! libFuzzer.
//!
//! The `gen-*` files are generated from the deterministic fixture in `fuzz_bodies`; regenerate
//! them after a protocol change with
//! `PARLEY_REGEN_FUZZ_CORPUS=1 cargo test -p parley-proto --test fuzz_corpus`.
//! Other files (crash reproducers, inputs minimized from fuzzing) are kept and replayed too.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod fuzz_bodies;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use fuzz_bodies::{TARGETS, corpus};

const GEN_PREFIX: &str = "gen-";

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| {
        panic!("corpus directory {} is missing ({e}); regenerate it", dir.display())
    });
    let mut out: Vec<PathBuf> =
        entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    out.sort();
    out
}

fn regenerate(dir: &Path, generated: &[(String, Vec<u8>)]) {
    fs::create_dir_all(dir).unwrap();
    for old in files(dir) {
        let name = old.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with(GEN_PREFIX) {
            fs::remove_file(&old).unwrap();
        }
    }
    for (name, bytes) in generated {
        fs::write(dir.join(format!("{GEN_PREFIX}{name}")), bytes).unwrap();
    }
}

/// Every target's corpus exists, is not empty, matches the generator, and every file in it
/// runs through the target's body without a property violation.
#[test]
fn replay_fuzz_corpus() {
    let root = corpus_root();
    let regen = std::env::var_os("PARLEY_REGEN_FUZZ_CORPUS").is_some_and(|v| v == "1");
    for (target, body) in TARGETS {
        let dir = root.join(target);
        let generated = corpus(target);
        assert!(generated.len() <= 50, "{target}: corpus too large");
        if regen {
            regenerate(&dir, &generated);
        }
        let on_disk = files(&dir);
        assert!(!on_disk.is_empty(), "corpus directory {} is empty", dir.display());
        // The generated part is up to date (catches a stale corpus after a format change).
        let disk_gen: BTreeSet<String> = on_disk
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(GEN_PREFIX))
            .collect();
        let want_gen: BTreeSet<String> =
            generated.iter().map(|(n, _)| format!("{GEN_PREFIX}{n}")).collect();
        assert_eq!(
            disk_gen, want_gen,
            "{target}: generated corpus files differ; run \
             PARLEY_REGEN_FUZZ_CORPUS=1 cargo test -p parley-proto --test fuzz_corpus"
        );
        for (name, bytes) in &generated {
            let path = dir.join(format!("{GEN_PREFIX}{name}"));
            assert!(
                fs::read(&path).unwrap() == *bytes,
                "{}: stale; run PARLEY_REGEN_FUZZ_CORPUS=1 cargo test -p parley-proto \
                 --test fuzz_corpus",
                path.display()
            );
        }
        for path in on_disk {
            eprintln!("fuzz corpus: {target} <- {}", path.display());
            body(&fs::read(&path).unwrap());
        }
    }
    // No orphan corpus directory (a renamed target would otherwise silently stop replaying).
    let known: BTreeSet<&str> = TARGETS.iter().map(|(t, _)| *t).collect();
    for entry in fs::read_dir(&root).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(known.contains(name.as_str()), "fuzz/corpus/{name} has no fuzz target");
    }
}

/// The valid seeds really are valid: each fixture message is accepted where it should be.
#[test]
fn fixture_messages_are_live() {
    let fx = fuzz_bodies::fixture();
    let mut ok = 0;
    for (state, label, message) in &fx.messages {
        let mut s = parley_proto::Session::from_bytes(&fx.states[usize::from(*state)].1).unwrap();
        let mut rng = fuzz_bodies::rng(0);
        let r = s.decrypt_any(&mut rng, message, fuzz_bodies::AD);
        let expect_ok =
            !(label.contains("replay") || label.contains("own") || label.contains("other"));
        assert_eq!(r.is_ok(), expect_ok, "state {state} message {label}: {r:?}");
        ok += usize::from(r.is_ok());
    }
    assert!(ok >= 6);
    let dev = fx.bob_device.public();
    for (label, m) in &fx.initials {
        let mut store = parley_proto::PrekeyStore::from_bytes(&fx.bob_store, dev).unwrap();
        let mut rng = fuzz_bodies::rng(0);
        let r = store.accept(&mut rng, fuzz_bodies::NOW, &fx.bob_device, &fx.bob_cert, m, b"");
        assert_eq!(r.is_ok(), !label.contains("not-initial"), "initial {label}: {r:?}");
    }
}
