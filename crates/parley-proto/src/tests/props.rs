//! Property tests (proptest): random delivery schedules, bit flips, replays.

use proptest::prelude::*;

use super::support::*;
use crate::*;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(40);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

#[derive(Debug, Clone)]
enum Op {
    Send(usize),
    Deliver(usize, usize),
    Drop(usize, usize),
    Replay(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..2).prop_map(Op::Send),
        3 => (0usize..2, any::<usize>()).prop_map(|(d, i)| Op::Deliver(d, i)),
        1 => (0usize..2, any::<usize>()).prop_map(|(d, i)| Op::Drop(d, i)),
        1 => (0usize..2, any::<usize>()).prop_map(|(d, i)| Op::Replay(d, i)),
    ]
}

struct Flight {
    bytes: Vec<u8>,
    plaintext: Vec<u8>,
    chain: [u8; 32],
    n: u32,
}

fn covered(gaps: &[Gap], f: &Flight) -> bool {
    gaps.iter().any(|g| g.chain == f.chain && f.n >= g.first && f.n - g.first < g.count)
}

proptest! {
    #![proptest_config(config())]

    /// Every delivered message decrypts exactly once to its plaintext, whatever the order and
    /// drops; replays are refused and change nothing; a message that cannot be decrypted any
    /// more was announced by a gap event.
    #[test]
    fn random_schedules_deliver_exactly_once(seed in any::<u64>(), ops in prop::collection::vec(op(), 1..90)) {
        let mut rng = CtrRng::new(&seed.to_be_bytes());
        let (a, b) = established(&mut rng);
        let mut parties = [a, b];
        let mut in_flight: [Vec<Flight>; 2] = [Vec::new(), Vec::new()];
        let mut delivered: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
        let mut gaps: [Vec<Gap>; 2] = [Vec::new(), Vec::new()];
        let mut counter = 0u32;
        let deliver = |parties: &mut [Session; 2], gaps: &mut [Vec<Gap>; 2], rng: &mut CtrRng, dir: usize, f: &Flight| -> Result<(), TestCaseError> {
            let to = 1 - dir;
            match parties[to].decrypt_any(rng, &f.bytes, b"ad") {
                Ok(d) => {
                    prop_assert_eq!(d.plaintext(), &f.plaintext[..]);
                    gaps[to].extend(d.gaps().iter().cloned());
                }
                Err(e) => {
                    prop_assert!(matches!(e, DecryptError::Undecryptable | DecryptError::Replay), "{e:?}");
                    prop_assert!(covered(&gaps[to], f), "undecryptable message was not announced by a gap");
                }
            }
            Ok(())
        };
        for op in ops {
            match op {
                Op::Send(dir) => {
                    counter += 1;
                    let plaintext = format!("{dir}:{counter}").into_bytes();
                    let (chain, n) = parties[dir].next_send_position();
                    let bytes = parties[dir].encrypt(&mut rng, &plaintext, b"ad").unwrap();
                    in_flight[dir].push(Flight { bytes, plaintext, chain, n });
                }
                Op::Deliver(dir, i) if !in_flight[dir].is_empty() => {
                    let f = in_flight[dir].remove(i % in_flight[dir].len());
                    deliver(&mut parties, &mut gaps, &mut rng, dir, &f)?;
                    delivered[dir].push(f.bytes);
                }
                Op::Drop(dir, i) if !in_flight[dir].is_empty() => {
                    in_flight[dir].remove(i % in_flight[dir].len());
                }
                Op::Replay(dir, i) if !delivered[dir].is_empty() => {
                    let m = &delivered[dir][i % delivered[dir].len()];
                    let to = 1 - dir;
                    let before = parties[to].to_bytes().to_vec();
                    prop_assert!(parties[to].decrypt_any(&mut rng, m, b"ad").is_err());
                    prop_assert_eq!(parties[to].to_bytes().to_vec(), before);
                }
                _ => {}
            }
        }
        for (dir, flights) in in_flight.iter_mut().enumerate() {
            for f in std::mem::take(flights) {
                deliver(&mut parties, &mut gaps, &mut rng, dir, &f)?;
            }
        }
    }

    /// Flipping any bit of a message (sampled over all fields) or truncating it is rejected and
    /// the receiver's serialized state is byte-identical before and after.
    #[test]
    fn bit_flips_are_rejected_without_state_change(
        seed in any::<u64>(),
        len in 0usize..3000,
        flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..24),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut rng = CtrRng::new(&seed.to_be_bytes());
        let (mut a, mut b) = established(&mut rng);
        let plaintext = vec![0x5a; len];
        // Alternate: sometimes the flipped message also starts a new ratchet chain.
        let m = if seed % 2 == 0 {
            a.encrypt(&mut rng, &plaintext, b"ad").unwrap()
        } else {
            let r = b.encrypt(&mut rng, b"r", b"").unwrap();
            a.decrypt_any(&mut rng, &r, b"").unwrap();
            a.encrypt(&mut rng, &plaintext, b"ad").unwrap()
        };
        let before = b.to_bytes().to_vec();
        for (idx, bit) in &flips {
            let mut bad = m.clone();
            bad[idx.index(m.len())] ^= 1 << bit;
            prop_assert!(b.decrypt_any(&mut rng, &bad, b"ad").is_err());
            prop_assert_eq!(&b.to_bytes()[..], &before[..]);
        }
        let short = &m[..cut.index(m.len())];
        prop_assert!(b.decrypt_any(&mut rng, short, b"ad").is_err());
        prop_assert_eq!(&b.to_bytes()[..], &before[..]);
        let d = b.decrypt_any(&mut rng, &m, b"ad").unwrap();
        prop_assert_eq!(d.plaintext(), &plaintext[..]);
        prop_assert!(b.decrypt_any(&mut rng, &m, b"ad").is_err());
    }
}
