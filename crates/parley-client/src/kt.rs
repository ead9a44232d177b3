//! Key-transparency verification (docs/KT.md): lookup proofs, key-history proofs and
//! append-only proofs from the server's akd directory, checked with the `akd` crate's
//! verifiers under akd's `WhatsAppV1Configuration` (the server's). Every `akd` type stays in
//! this module; callers pass bytes. Also used by `parley audit`.

use akd::{AkdLabel, HistoryParams};
use protobuf::Message;

/// The directory's configuration (must match the server's; docs/KT.md §1).
type Tc = akd::WhatsAppV1Configuration;

/// Largest proof accepted for decoding, bytes (a bound on the work a server can cause).
pub const MAX_PROOF_BYTES: usize = 64 * 1024 * 1024;

/// Why a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KtVerifyError {
    /// The proof is not a well-formed encoding.
    #[error("malformed key-transparency proof: {0}")]
    Malformed(String),
    /// The proof does not verify against the root.
    #[error("the key-transparency proof does not verify: {0}")]
    Invalid(String),
}

/// One committed value of a label: the epoch that committed it, its version and the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The epoch of the commitment.
    pub epoch: u64,
    /// The label's version (1 for its first value).
    pub version: u64,
    /// The committed value (docs/KT.md §2).
    pub value: Vec<u8>,
}

fn parse<M: Message>(bytes: &[u8]) -> Result<M, KtVerifyError> {
    if bytes.len() > MAX_PROOF_BYTES {
        return Err(KtVerifyError::Malformed(format!("{} bytes is too large", bytes.len())));
    }
    M::parse_from_bytes(bytes).map_err(|e| KtVerifyError::Malformed(e.to_string()))
}

fn invalid(e: impl std::fmt::Display) -> KtVerifyError {
    KtVerifyError::Invalid(e.to_string())
}

/// Verifies a lookup proof of `username` against `root` at `epoch` under the directory's VRF
/// public key; returns the committed value it proves (akd lookup verification: VRF label,
/// membership of the value's commitment, non-membership of the next version).
pub fn verify_lookup(
    vrf_public_key: &[u8; 32],
    root: &[u8; 32],
    epoch: u64,
    username: &str,
    proof: &[u8],
) -> Result<Committed, KtVerifyError> {
    let p: akd::proto::specs::types::LookupProof = parse(proof)?;
    let p = akd::LookupProof::try_from(&p).map_err(|e| KtVerifyError::Malformed(e.to_string()))?;
    let r = akd::verify::lookup_verify::<Tc>(
        vrf_public_key,
        *root,
        epoch,
        AkdLabel(username.as_bytes().to_vec()),
        p,
    )
    .map_err(invalid)?;
    Ok(Committed { epoch: r.epoch, version: r.version, value: r.value.0 })
}

/// Verifies the complete key history of `username` against `root` at `epoch`; returns every
/// value the directory ever committed for it, newest first.
pub fn verify_history(
    vrf_public_key: &[u8; 32],
    root: &[u8; 32],
    epoch: u64,
    username: &str,
    proof: &[u8],
) -> Result<Vec<Committed>, KtVerifyError> {
    let p: akd::proto::specs::types::HistoryProof = parse(proof)?;
    let p = akd::HistoryProof::try_from(&p).map_err(|e| KtVerifyError::Malformed(e.to_string()))?;
    let r = akd::verify::key_history_verify::<Tc>(
        vrf_public_key,
        *root,
        epoch,
        AkdLabel(username.as_bytes().to_vec()),
        p,
        akd::HistoryVerificationParams::Default { history_params: HistoryParams::Complete },
    )
    .map_err(invalid)?;
    Ok(r.into_iter()
        .map(|v| Committed { epoch: v.epoch, version: v.version, value: v.value.0 })
        .collect())
}

/// Verifies that the directory only grew from the first to the last of `roots` (the roots of
/// consecutive epochs `start..=start + roots.len() - 1`): akd's append-only audit.
pub async fn verify_append_only(
    start: u64,
    roots: &[[u8; 32]],
    proof: &[u8],
) -> Result<(), KtVerifyError> {
    let p: akd::proto::specs::types::AppendOnlyProof = parse(proof)?;
    let p =
        akd::AppendOnlyProof::try_from(&p).map_err(|e| KtVerifyError::Malformed(e.to_string()))?;
    let expected: Vec<u64> = (0..roots.len().saturating_sub(1) as u64).map(|i| start + i).collect();
    if p.epochs != expected {
        return Err(KtVerifyError::Invalid(format!(
            "the proof covers epochs {:?}, expected steps from {expected:?}",
            p.epochs
        )));
    }
    akd::auditor::audit_verify::<Tc>(roots.to_vec(), p).await.map_err(invalid)
}
