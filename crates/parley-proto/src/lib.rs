//! # parley-proto
//!
//! Parley's protocol core, sans-IO: bytes, state, `now` and an RNG go in; bytes, events and new
//! state come out. No sockets, files, clocks or global RNG.
//!
//! * [`AccountIdentity`] certifies [`DeviceIdentity`]s ([`DeviceCertificate`], [`DeviceList`]);
//! * a device publishes prekeys from its [`PrekeyStore`]; peers fetch a [`PrekeyBundleIn`],
//!   [`validate`](PrekeyBundleIn::validate) it, and start a [`Session`] with [`initiate`]
//!   (PQXDH over X25519 + ML-KEM-1024);
//! * [`Session::encrypt`] / [`Session::decrypt_any`] run the Double Ratchet with header
//!   encryption; the responder's first message goes through [`PrekeyStore::accept`];
//! * [`safety_number`] gives the 60-digit number and QR payload;
//! * message franking: [`seal`] a [`FrankedBody`], encrypt its content with [`ratchet_ad`] as
//!   associated data, [`open`] it on receipt; the server adds a [`server_tag`]; a moderator
//!   runs [`verify_report`] on a [`Report`].
//!
//! ```
//! use parley_proto::*;
//! let mut rng = rand::rng();
//! # fn now() -> u64 { 1_800_000_000 }
//! // Bob publishes a bundle.
//! let bob_account = AccountIdentity::generate(&mut rng);
//! let bob_device = DeviceIdentity::generate(&mut rng);
//! let bob_cert = bob_account.certify(1, bob_device.public());
//! let mut bob_store = PrekeyStore::new();
//! let spk = bob_store.generate_signed_prekey(&mut rng, now(), &bob_device)?;
//! let kem = bob_store.generate_last_resort_kem(&mut rng, now(), &bob_device)?;
//! let bundle = PrekeyBundleIn::from_parts(bob_cert.encode(), spk.encode(), kem.encode(), None)
//!     .validate(Some(bob_account.public()))?;
//!
//! // Alice starts a session and sends; Bob accepts and replies.
//! let alice_account = AccountIdentity::generate(&mut rng);
//! let alice_device = DeviceIdentity::generate(&mut rng);
//! let alice_cert = alice_account.certify(1, alice_device.public());
//! let mut alice = initiate(&mut rng, &alice_device, &alice_cert, &bundle)?;
//! let m1 = alice.encrypt(&mut rng, b"hello bob", b"")?;
//! let Accepted { session: mut bob, first } =
//!     bob_store.accept(&mut rng, now(), &bob_device, &bob_cert, &m1, b"")?;
//! assert_eq!(first.plaintext(), b"hello bob");
//! let m2 = bob.encrypt(&mut rng, b"hi alice", b"")?;
//! assert_eq!(alice.decrypt_any(&mut rng, &m2, b"")?.plaintext(), b"hi alice");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod crypto;
mod encoding;
mod franking;
mod keys;
mod kt;
mod padding;
mod pqxdh;
mod ratchet;
mod safety;
mod secrets;

#[cfg(test)]
mod crypto_tests;
#[cfg(test)]
mod tests;

pub use encoding::DecodeError;
pub use franking::{
    CHAIN_STATE_LEN, ChainState, DEFAULT_CONTEXT, DOMAIN_FRANKING_AD, DOMAIN_FRANKING_CHAIN,
    DOMAIN_FRANKING_COMMITMENT, DOMAIN_FRANKING_SERVER_TAG, FRANKED_BODY_TYPE, FRANKING_TAG_LEN,
    FrankedBody, FrankingError, FrankingKey, ItemVerdict, KeyStatus, MAX_CONTEXT,
    MAX_FRANKED_BODY_LEN, MAX_FRANKED_CONTENT_LEN, MAX_FRANKED_ID_LEN, MAX_FRANKED_NAME_LEN,
    MAX_FRANKED_TEXT_LEN, MAX_REPORT_ITEMS, Opened, Report, ReportItem, Sealed, chain_hash, open,
    ratchet_ad, seal, server_tag, verify_report, verify_server_tag,
};
pub use keys::{
    AccountIdentity, AccountPublicKey, DOMAIN_DEVICE_CERT, DOMAIN_DEVICE_LIST, DOMAIN_KEM_PREKEY,
    DOMAIN_SIGNED_PREKEY, DeviceCertificate, DeviceIdentity, DeviceList, DevicePublicKeys,
    KEY_TYPE_ED25519, KEY_TYPE_MLKEM1024, KEY_TYPE_X25519, KemPrekey, KemPrekeyKind, KeyError,
    MAX_BUNDLE_LEN, MAX_CERT_LEN, MAX_DEVICES, OneTimePrekey, PrekeyBundle, PrekeyBundleIn,
    SignedPrekey,
};
pub use kt::{
    DOMAIN_KT_DELETED, DOMAIN_KT_ROOT, DOMAIN_KT_VALUE, KT_SIGNATURE_LEN, KT_VALUE_LEN,
    KtSignatureError, KtSigningKey, kt_tombstone, kt_value, verify_root_signature,
};
pub use padding::{MAX_PADDED_LEN, MAX_PLAINTEXT_LEN, MIN_PADDED_LEN, padded_len};
pub use pqxdh::{
    Accepted, DOMAIN_AD, DOMAIN_HANDSHAKE_ID, DOMAIN_REPLAY_ID, HandshakeError, INFO_PQXDH,
    MAX_ONE_TIME_PREKEYS, MAX_REPLAY_ENTRIES, MAX_ROTATED_PREKEYS, MessageKind,
    PREKEY_MAX_AGE_SECS, PREKEY_ROTATION_SECS, PrekeyStore, initiate, message_kind,
};
pub use ratchet::{
    DecryptError, Decrypted, ENC_HEADER_LEN, EncryptError, Gap, INFO_HEADER_KEYS,
    INFO_MESSAGE_KEYS, INFO_RATCHET, MAX_AD_LEN, MAX_FORWARD_JUMP, MAX_RECEIVING_CHAINS,
    MAX_SKIPPED_KEYS, MESSAGE_OVERHEAD, Session,
};
pub use safety::{
    MAX_ACCOUNT_ID_LEN, QR_LEN, SAFETY_NUMBER_ITERATIONS, SAFETY_NUMBER_VERSION, SafetyError,
    SafetyNumber, safety_number,
};

/// The RNG traits this crate takes (`rand_core` 0.10), re-exported so callers use the same
/// version.
pub use rand_core;
