//! Key-transparency costs (docs/BENCHMARKS.md, "Key transparency"): epoch publication of 1,000
//! and 10,000 changed entries on a 100,000-user directory (akd's in-memory storage, and the
//! server's own SQLite storage adapter), lookup proof size and verification time, audit
//! (append-only) proof size and verification time. The directory is the server's
//! (`parley_server::kt::bench`), the verification the client's and auditor's
//! (`parley_client::kt`).
//!
//! Run: `cargo bench -p parley-client --bench kt --profile test` (docs/BENCHMARKS.md says why
//! that profile; set `KT_BENCH_USERS` for another directory size).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use parley_server::kt::KtKeys;
use parley_server::kt::bench::BenchDirectory;

fn value(user: usize, round: u64) -> [u8; 32] {
    parley_proto::kt_value(&(user as u64).to_be_bytes(), &round.to_be_bytes())
}

fn users() -> usize {
    std::env::var("KT_BENCH_USERS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

/// Publishes `n` users in batches of 10,000 (as epochs would).
fn fill(rt: &tokio::runtime::Runtime, d: &BenchDirectory, n: usize) {
    let t = Instant::now();
    for start in (0..n).step_by(10_000) {
        let batch: Vec<(String, [u8; 32])> =
            (start..n.min(start + 10_000)).map(|i| (format!("user{i}"), value(i, 0))).collect();
        rt.block_on(d.publish(batch)).unwrap();
    }
    println!("kt: filled a directory of {n} users in {:.1} s", t.elapsed().as_secs_f64());
}

fn publish_benches(c: &mut Criterion, name: &str, d: &BenchDirectory, n: usize, sizes: &[usize]) {
    let rt = rt();
    let mut g = c.benchmark_group(format!("kt_publish_{name}"));
    g.sampling_mode(SamplingMode::Flat).sample_size(10).warm_up_time(Duration::from_millis(1));
    let mut round = 0u64;
    for &k in sizes {
        g.bench_function(format!("{k}_updates_on_{n}_users"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    round += 1;
                    // k existing users get a new value (a key change each).
                    let batch: Vec<(String, [u8; 32])> = (0..k)
                        .map(|j| {
                            let i = (j * 7919 + round as usize * 131) % n;
                            (format!("user{i}"), value(i, round))
                        })
                        .collect::<std::collections::BTreeMap<_, _>>()
                        .into_iter()
                        .collect();
                    let t = Instant::now();
                    rt.block_on(d.publish(batch)).unwrap();
                    total += t.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

fn proof_benches(c: &mut Criterion, d: &BenchDirectory, n: usize) {
    let rt = rt();
    let vrf = d.vrf_public_key();
    let (proof, epoch, root) = rt.block_on(d.lookup("user4242")).unwrap();
    println!("kt: lookup proof on {n} users: {} bytes (protobuf)", proof.len());
    // An audit proof for one epoch of 1,000 changes.
    let batch: Vec<(String, [u8; 32])> =
        (0..1000).map(|i| (format!("audit{i}"), value(i, 99))).collect();
    let (end, _) = rt.block_on(d.publish(batch)).unwrap();
    let audit = rt.block_on(d.audit(end - 1, end)).unwrap();
    println!("kt: audit proof for one epoch of 1000 new entries: {} bytes (protobuf)", audit.len());
    let (_, e1, r1) = rt.block_on(d.lookup("audit1")).unwrap();
    // Nothing was published between the first lookup and that epoch: its root is the start.
    let (e0, r0) = (epoch, root);
    assert_eq!((e0 + 1, e1), (end, end));
    let mut g = c.benchmark_group("kt_proofs");
    g.sample_size(20);
    g.bench_function(format!("lookup_generate_{n}_users"), |b| {
        b.iter(|| rt.block_on(d.lookup("user4242")).unwrap())
    });
    g.bench_function(format!("lookup_verify_{n}_users"), |b| {
        b.iter(|| parley_client::kt::verify_lookup(&vrf, &root, epoch, "user4242", &proof).unwrap())
    });
    g.bench_function("audit_generate_1_epoch_1000_entries", |b| {
        b.iter(|| rt.block_on(d.audit(e0, end)).unwrap())
    });
    g.bench_function("audit_verify_1_epoch_1000_entries", |b| {
        b.iter(|| {
            rt.block_on(parley_client::kt::verify_append_only(e0, &[r0, r1], &audit)).unwrap()
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    let rt = rt();
    let n = users();
    let mem = rt.block_on(BenchDirectory::in_memory(KtKeys::generate())).unwrap();
    fill(&rt, &mem, n);
    proof_benches(c, &mem, n);
    publish_benches(c, "memory", &mem, n, &[1000, 10_000]);

    // The server's own storage adapter over SQLite (the server's store, group commit, WAL,
    // synchronous = FULL), at the same size.
    let dir = tempfile::tempdir().unwrap();
    let store = rt
        .block_on(parley_server::store::sqlite::SqliteStore::open(&dir.path().join("kt.db")))
        .unwrap();
    let store: Arc<dyn parley_server::store::Store> = Arc::new(store);
    let sq = rt.block_on(BenchDirectory::over_store(store, KtKeys::generate())).unwrap();
    fill(&rt, &sq, n);
    publish_benches(c, "sqlite", &sq, n, &[1000, 10_000]);
}

criterion_group!(kt, benches);
criterion_main!(kt);
