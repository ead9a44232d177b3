//! Shared fixtures: a deterministic RNG and parties with prekeys.

use std::convert::Infallible;

use crate::*;

/// The vectors' RNG ("ctr-sha256"): the byte stream SHA-256(seed ‖ u64be(0)) ‖
/// SHA-256(seed ‖ u64be(1)) ‖ …, consumed in order across calls.
pub(crate) struct CtrRng {
    seed: Vec<u8>,
    counter: u64,
    buf: [u8; 32],
    used: usize,
}

impl CtrRng {
    pub(crate) fn new(seed: &[u8]) -> Self {
        Self { seed: seed.to_vec(), counter: 0, buf: [0; 32], used: 32 }
    }
}

impl rand_core::TryRng for CtrRng {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_be_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for d in dst.iter_mut() {
            if self.used == 32 {
                self.buf = crate::crypto::sha256(&[&self.seed, &self.counter.to_be_bytes()]);
                self.counter += 1;
                self.used = 0;
            }
            *d = self.buf[self.used];
            self.used += 1;
        }
        Ok(())
    }
}

impl rand_core::TryCryptoRng for CtrRng {}

pub(crate) const NOW: u64 = 1_800_000_000;

/// An account with one device and its prekey store.
pub(crate) struct Party {
    pub(crate) account: AccountIdentity,
    pub(crate) device: DeviceIdentity,
    pub(crate) cert: DeviceCertificate,
    pub(crate) store: PrekeyStore,
    pub(crate) spk: SignedPrekey,
    pub(crate) last_resort: KemPrekey,
    pub(crate) one_time: Vec<(OneTimePrekey, KemPrekey)>,
}

impl Party {
    pub(crate) fn new<R: rand_core::CryptoRng + ?Sized>(rng: &mut R, one_time: usize) -> Self {
        let account = AccountIdentity::generate(rng);
        let device = DeviceIdentity::generate(rng);
        let cert = account.certify(1, device.public());
        let mut store = PrekeyStore::new();
        let spk = store.generate_signed_prekey(rng, NOW, &device).unwrap();
        let last_resort = store.generate_last_resort_kem(rng, NOW, &device).unwrap();
        let (ec, kem) = store.generate_one_time(rng, &device, one_time).unwrap();
        Self {
            account,
            device,
            cert,
            store,
            spk,
            last_resort,
            one_time: ec.into_iter().zip(kem).collect(),
        }
    }

    /// A verified bundle; uses (and forgets) the next one-time pair when there is one.
    pub(crate) fn bundle(&mut self) -> PrekeyBundle {
        let (opk, kem) = match self.one_time.pop() {
            Some((o, k)) => (Some(o.encode()), k.encode()),
            None => (None, self.last_resort.encode()),
        };
        PrekeyBundleIn::from_parts(self.cert.encode(), self.spk.encode(), kem, opk)
            .validate(Some(self.account.public()))
            .unwrap()
    }
}

/// Alice initiates to Bob; Bob accepts Alice's first message. Returns (alice, bob).
pub(crate) fn pair<R: rand_core::CryptoRng + ?Sized>(rng: &mut R) -> (Session, Session) {
    let alice = Party::new(rng, 0);
    let mut bob = Party::new(rng, 2);
    let bundle = bob.bundle();
    let mut a = initiate(rng, &alice.device, &alice.cert, &bundle).unwrap();
    let m = a.encrypt(rng, b"hello", b"").unwrap();
    let acc = bob.store.accept(rng, NOW, &bob.device, &bob.cert, &m, b"").unwrap();
    assert_eq!(acc.first.plaintext(), b"hello");
    (a, acc.session)
}

/// Sends one message each way so that both sides have completed a DH ratchet step.
pub(crate) fn established<R: rand_core::CryptoRng + ?Sized>(rng: &mut R) -> (Session, Session) {
    let (mut a, mut b) = pair(rng);
    let r = b.encrypt(rng, b"reply", b"").unwrap();
    assert_eq!(a.decrypt_any(rng, &r, b"").unwrap().plaintext(), b"reply");
    (a, b)
}

pub(crate) fn snapshot(s: &Session) -> Vec<u8> {
    s.to_bytes().to_vec()
}
