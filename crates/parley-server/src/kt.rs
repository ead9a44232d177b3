//! Key transparency (docs/KT.md): an auditable key directory (the `akd` crate, WhatsApp's
//! AKD, with its `WhatsAppV1Configuration`) over our [`Store`], with the server's VRF key and
//! KT signing key from the data folder.
//!
//! Every `akd` type stays inside this module: the rest of the server passes usernames, bytes
//! and [`SignedRoot`]s. Label = username; value = [`parley_proto::kt_value`] of the account's
//! identity key and signed device list (a tombstone once the account is deleted). Registrations
//! and deletions queue the username (`kt_dirty`) in the same transaction as the change;
//! [`Kt::publish`] turns everything queued into one epoch and signs (epoch, root).
//!
//! ```text
//! DATA/kt/          (0700)
//!   vrf.key         32 bytes, the VRF secret key (0600); never changes (docs/OPERATIONS.md)
//!   signing.key     32 bytes, the Ed25519 seed that signs (epoch, root) (0600)
//! ```

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use akd::ecvrf::{VRFKeyStorage, VrfError};
use akd::errors::StorageError;
use akd::storage::types::{DbRecord, KeyData, StorageType, ValueState, ValueStateRetrievalFlag};
use akd::storage::{Database, DbSetState, Storable, StorageManager};
use akd::{AkdLabel, AkdValue, AzksParallelismConfig, EpochHash, HistoryParams, NodeLabel};
use parley_proto::{KtSigningKey, kt_tombstone, kt_value};
use protobuf::Message;
use zeroize::Zeroizing;

use crate::store::{KtEpochRow, KtValueRow, Store, StoreError};

/// The configuration of the directory: hashing, VRF and commitment scheme (akd's deployed
/// WhatsApp v1 configuration; docs/KT.md §1).
type Tc = akd::WhatsAppV1Configuration;
type Dir = akd::Directory<Tc, StoreDb, FileVrf>;

/// The key-transparency folder inside the data folder.
pub const KT_DIR: &str = "kt";
/// The VRF secret key's file.
pub const VRF_KEY_FILE: &str = "vrf.key";
/// The KT signing key's file.
pub const SIGNING_KEY_FILE: &str = "signing.key";
/// Most usernames folded into one epoch; the rest wait for the next one. Bounds how long a
/// publication holds the directory (lookups wait for it): about 20 s on SQLite at 100,000
/// users (docs/BENCHMARKS.md).
pub const MAX_EPOCH_UPDATES: u32 = 10_000;
/// Most epochs one audit request spans.
pub const MAX_AUDIT_SPAN: u64 = 64;

/// Why the directory could not be opened or answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KtError {
    /// A key file or folder could not be read or written.
    #[error("key transparency: cannot use {path}: {reason}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A key file is damaged.
    #[error("key transparency: {path} is damaged: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The stored directory and the recorded epochs disagree.
    #[error("key transparency: the directory is inconsistent: {0}")]
    Inconsistent(String),
    /// The store failed.
    #[error("key transparency: {0}")]
    Store(#[from] StoreError),
    /// The directory library failed.
    #[error("key transparency: directory error: {0}")]
    Directory(String),
    /// The username has no entry in the directory yet (registered after the latest epoch).
    #[error("not in the key-transparency directory yet")]
    NotPublished,
    /// An audit range outside the published epochs or longer than [`MAX_AUDIT_SPAN`].
    #[error("bad audit range: {0}")]
    BadRange(String),
}

fn akd_err(e: impl std::fmt::Display) -> KtError {
    KtError::Directory(e.to_string())
}

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------

/// The directory's secret keys. `Debug` shows only public keys.
pub struct KtKeys {
    vrf: Zeroizing<[u8; 32]>,
    signing: KtSigningKey,
}

impl std::fmt::Debug for KtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KtKeys").field("signing", &self.signing).finish_non_exhaustive()
    }
}

impl KtKeys {
    /// Keys from raw bytes (e.g. from a key service shared between nodes).
    pub fn from_bytes(vrf: &[u8; 32], signing: &[u8; 32]) -> Self {
        Self { vrf: Zeroizing::new(*vrf), signing: KtSigningKey::from_bytes(signing) }
    }

    /// The keys as one secret (VRF key, then signing key seed), for the cluster's sealed
    /// key material (`crate::secrets`).
    pub fn to_secret(&self) -> Zeroizing<Vec<u8>> {
        let mut v = Zeroizing::new(Vec::with_capacity(64));
        v.extend_from_slice(&self.vrf[..]);
        v.extend_from_slice(&self.signing.secret_bytes()[..]);
        v
    }

    /// The inverse of [`KtKeys::to_secret`].
    pub fn from_secret(bytes: &[u8]) -> Result<Self, KtError> {
        let (vrf, signing) = bytes.split_at_checked(32).ok_or_else(|| {
            KtError::Inconsistent("the shared key-transparency keys are damaged".into())
        })?;
        let (Ok(vrf), Ok(signing)) = (<[u8; 32]>::try_from(vrf), <[u8; 32]>::try_from(signing))
        else {
            return Err(KtError::Inconsistent(
                "the shared key-transparency keys are damaged".into(),
            ));
        };
        Ok(Self::from_bytes(&vrf, &signing))
    }

    /// New random keys (tests and benches; a server uses [`load_or_create_keys`]).
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let vrf = Zeroizing::new(rand::RngExt::random::<[u8; 32]>(&mut rng));
        Self { vrf, signing: KtSigningKey::generate(&mut rng) }
    }
}

fn io(path: &Path, e: impl std::fmt::Display) -> KtError {
    KtError::Io { path: path.to_path_buf(), reason: e.to_string() }
}

/// Reads a 32-byte key file, or creates it with fresh random bytes (mode 0600, fsynced, created
/// exclusively so two starting servers cannot both write one).
fn key_file(path: &Path) -> Result<Zeroizing<[u8; 32]>, KtError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| KtError::Damaged {
                path: path.to_path_buf(),
                reason: format!("{} bytes, expected 32", bytes.len()),
            })?;
            Ok(Zeroizing::new(key))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Zeroizing::new(rand::RngExt::random::<[u8; 32]>(&mut rand::rng()));
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(path).map_err(|e| io(path, e))?;
            f.write_all(&key[..]).and_then(|()| f.sync_all()).map_err(|e| io(path, e))?;
            if let Some(dir) = path.parent() {
                #[cfg(unix)]
                std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(dir, e))?;
            }
            Ok(key)
        }
        Err(e) => Err(io(path, e)),
    }
}

/// Loads the VRF key and the KT signing key from `DATA/kt/`, creating them at first start.
/// The one place keys come from: a deployment that shares them between nodes replaces this.
pub fn load_or_create_keys(data_dir: &Path) -> Result<KtKeys, KtError> {
    let dir = data_dir.join(KT_DIR);
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(&dir).map_err(|e| io(&dir, e))?;
    let vrf = key_file(&dir.join(VRF_KEY_FILE))?;
    let signing = key_file(&dir.join(SIGNING_KEY_FILE))?;
    Ok(KtKeys { vrf, signing: KtSigningKey::from_bytes(&signing) })
}

/// The keys in `DATA/kt/` when both files exist (nothing is created): what a single node that
/// joins a cluster contributes.
pub fn existing_keys(data_dir: &Path) -> Result<Option<KtKeys>, KtError> {
    let dir = data_dir.join(KT_DIR);
    let (vrf, signing) = (dir.join(VRF_KEY_FILE), dir.join(SIGNING_KEY_FILE));
    if !vrf.exists() || !signing.exists() {
        return Ok(None);
    }
    let vrf = key_file(&vrf)?;
    let signing = key_file(&signing)?;
    Ok(Some(KtKeys { vrf, signing: KtSigningKey::from_bytes(&signing) }))
}

/// How long the publishing node's lease lasts without renewal, at least.
pub const MIN_PUBLISHER_LEASE_MS: u64 = 60_000;

/// Takes or renews the lease that makes this node (`node`) the cluster's only publisher of
/// epochs (docs/OPERATIONS.md §10): a compare-and-swap on the shared secret
/// [`crate::secrets::KT_PUBLISHER`] holding (node, expiry). `true` when this node holds it until
/// `now_ms + lease_ms`; `false` while another node's lease runs.
pub async fn publisher_lease(
    vault: &crate::secrets::Vault,
    node: &[u8; 16],
    now_ms: u64,
    lease_ms: u64,
) -> Result<bool, KtError> {
    use crate::secrets::KT_PUBLISHER;
    let err = |e: crate::secrets::SecretsError| KtError::Inconsistent(e.to_string());
    let mine = |until: u64| {
        let mut v = Zeroizing::new(node.to_vec());
        v.extend_from_slice(&until.to_be_bytes());
        v
    };
    let until = now_ms.saturating_add(lease_ms);
    let now_s = now_ms / 1000;
    let held = vault.load_or_create(KT_PUBLISHER, || Ok(mine(until)), now_s).await.map_err(err)?;
    if held.created {
        return Ok(true);
    }
    let (holder, expiry) = held.value.split_at_checked(16).unwrap_or((&[], &[]));
    let expiry = <[u8; 8]>::try_from(expiry).map(u64::from_be_bytes).unwrap_or(0);
    if holder != node.as_slice() && expiry > now_ms {
        return Ok(false);
    }
    vault.replace(KT_PUBLISHER, held.version, &mine(until), now_s).await.map_err(err)
}

/// akd's VRF key source: the key loaded from the data folder.
#[derive(Clone)]
struct FileVrf(Arc<Zeroizing<[u8; 32]>>);

#[async_trait::async_trait]
impl VRFKeyStorage for FileVrf {
    async fn retrieve(&self) -> Result<Vec<u8>, VrfError> {
        Ok(self.0.to_vec())
    }
}

// ---------------------------------------------------------------------------------------------
// Storage adapter
// ---------------------------------------------------------------------------------------------

/// akd's `Database` over our [`Store`]: tree records in `kt_nodes` under akd's binary ids
/// (encoded by [`encode_record`]), value states in `kt_values`.
#[derive(Clone)]
pub struct StoreDb(Arc<dyn Store>);

impl StoreDb {
    /// The adapter over `store` (public for akd's storage test suite).
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self(store)
    }
}

impl std::fmt::Debug for StoreDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreDb")
    }
}

fn storage_err(e: StoreError) -> StorageError {
    StorageError::Connection(e.to_string())
}

fn damaged_record(what: &str) -> StorageError {
    StorageError::Other(format!("damaged key-transparency record: {what}"))
}

const REC_AZKS: u8 = 1;
const REC_NODE: u8 = 2;

fn put_label(out: &mut Vec<u8>, l: &NodeLabel) {
    out.extend_from_slice(&l.label_val);
    out.extend_from_slice(&l.label_len.to_be_bytes());
}

fn put_opt_label(out: &mut Vec<u8>, l: &Option<NodeLabel>) {
    match l {
        None => out.push(0),
        Some(l) => {
            out.push(1);
            put_label(out, l);
        }
    }
}

fn put_node(out: &mut Vec<u8>, n: &akd::tree_node::TreeNode) {
    out.extend_from_slice(&n.last_epoch.to_be_bytes());
    out.extend_from_slice(&n.min_descendant_epoch.to_be_bytes());
    put_label(out, &n.parent);
    out.push(n.node_type as u8);
    put_opt_label(out, &n.left_child);
    put_opt_label(out, &n.right_child);
    out.extend_from_slice(&n.hash.0);
}

/// Our encoding of the aZKS and tree-node records (docs/KT.md §5): a type byte, then fixed
/// big-endian fields. Value states are stored as columns instead.
fn encode_record(r: &DbRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(200);
    match r {
        DbRecord::Azks(a) => {
            out.push(REC_AZKS);
            out.extend_from_slice(&a.latest_epoch.to_be_bytes());
            out.extend_from_slice(&a.num_nodes.to_be_bytes());
        }
        DbRecord::TreeNode(t) => {
            out.push(REC_NODE);
            put_label(&mut out, &t.label);
            put_node(&mut out, &t.latest_node);
            match &t.previous_node {
                None => out.push(0),
                Some(p) => {
                    out.push(1);
                    put_node(&mut out, p);
                }
            }
        }
        DbRecord::ValueState(_) => {}
    }
    out
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], StorageError> {
        let (head, rest) =
            self.0.split_first_chunk::<N>().ok_or_else(|| damaged_record("short"))?;
        self.0 = rest;
        Ok(*head)
    }
    fn u8(&mut self) -> Result<u8, StorageError> {
        Ok(self.take::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, StorageError> {
        Ok(u32::from_be_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, StorageError> {
        Ok(u64::from_be_bytes(self.take()?))
    }
    fn label(&mut self) -> Result<([u8; 32], u32), StorageError> {
        Ok((self.take()?, self.u32()?))
    }
    fn opt_label(&mut self) -> Result<Option<NodeLabel>, StorageError> {
        match self.u8()? {
            0 => Ok(None),
            1 => {
                let (v, l) = self.label()?;
                Ok(Some(NodeLabel::new(v, l)))
            }
            _ => Err(damaged_record("option tag")),
        }
    }
}

struct NodeFields {
    last_epoch: u64,
    min_desc: u64,
    parent: ([u8; 32], u32),
    node_type: u8,
    left: Option<NodeLabel>,
    right: Option<NodeLabel>,
    hash: [u8; 32],
}

fn read_node(r: &mut Reader<'_>) -> Result<NodeFields, StorageError> {
    let last_epoch = r.u64()?;
    let min_desc = r.u64()?;
    let parent = r.label()?;
    let node_type = r.u8()?;
    if !(1..=3).contains(&node_type) {
        return Err(damaged_record("node type"));
    }
    Ok(NodeFields {
        last_epoch,
        min_desc,
        parent,
        node_type,
        left: r.opt_label()?,
        right: r.opt_label()?,
        hash: r.take()?,
    })
}

fn decode_record(bytes: &[u8]) -> Result<DbRecord, StorageError> {
    let mut r = Reader(bytes);
    let rec = match r.u8()? {
        REC_AZKS => DbRecord::Azks(DbRecord::build_azks(r.u64()?, r.u64()?)),
        REC_NODE => {
            let (label_val, label_len) = r.label()?;
            let n = read_node(&mut r)?;
            let p = match r.u8()? {
                0 => None,
                1 => Some(read_node(&mut r)?),
                _ => return Err(damaged_record("option tag")),
            };
            let (pl, pd, ppv, ppl, pt, plc, prc, ph) = match p {
                None => (None, None, None, None, None, None, None, None),
                Some(p) => (
                    Some(p.last_epoch),
                    Some(p.min_desc),
                    Some(p.parent.0),
                    Some(p.parent.1),
                    Some(p.node_type),
                    p.left,
                    p.right,
                    Some(p.hash),
                ),
            };
            DbRecord::TreeNode(DbRecord::build_tree_node_with_previous_value(
                label_val,
                label_len,
                n.last_epoch,
                n.min_desc,
                n.parent.0,
                n.parent.1,
                n.node_type,
                n.left,
                n.right,
                n.hash,
                pl,
                pd,
                ppv,
                ppl,
                pt,
                plc,
                prc,
                ph,
            ))
        }
        _ => return Err(damaged_record("record type")),
    };
    if !r.0.is_empty() {
        return Err(damaged_record("trailing bytes"));
    }
    Ok(rec)
}

fn value_row(v: &ValueState) -> KtValueRow {
    KtValueRow {
        label: v.username.0.clone(),
        epoch: v.epoch,
        version: v.version,
        value: v.value.0.clone(),
        node_val: v.label.label_val.to_vec(),
        node_len: v.label.label_len,
    }
}

fn value_state(r: KtValueRow) -> Result<ValueState, StorageError> {
    let node_val: [u8; 32] =
        r.node_val.as_slice().try_into().map_err(|_| damaged_record("node label"))?;
    Ok(DbRecord::build_user_state(r.label, r.value, r.version, r.node_len, node_val, r.epoch))
}

/// The state `flag` selects among one label's states (sorted by epoch).
fn select(states: &[ValueState], flag: ValueStateRetrievalFlag) -> Option<&ValueState> {
    match flag {
        ValueStateRetrievalFlag::MaxEpoch => states.iter().max_by_key(|s| s.epoch),
        ValueStateRetrievalFlag::MinEpoch => states.iter().min_by_key(|s| s.epoch),
        ValueStateRetrievalFlag::SpecificVersion(v) => states.iter().find(|s| s.version == v),
        ValueStateRetrievalFlag::SpecificEpoch(e) => states.iter().find(|s| s.epoch == e),
        ValueStateRetrievalFlag::LeqEpoch(e) => {
            states.iter().filter(|s| s.epoch <= e).max_by_key(|s| s.epoch)
        }
    }
}

impl StoreDb {
    async fn states(
        &self,
        labels: Vec<Vec<u8>>,
    ) -> Result<HashMap<Vec<u8>, Vec<ValueState>>, StorageError> {
        let rows = self.0.kt_values(labels).await.map_err(storage_err)?;
        let mut out: HashMap<Vec<u8>, Vec<ValueState>> = HashMap::new();
        for r in rows {
            let label = r.label.clone();
            out.entry(label).or_default().push(value_state(r)?);
        }
        for v in out.values_mut() {
            v.sort_by_key(|s| s.epoch);
        }
        Ok(out)
    }
}

/// A value state's binary id is `[4] ‖ u64 epoch ‖ username` (akd's `ValueState` key).
fn parse_value_key(id: &[u8]) -> Result<(u64, Vec<u8>), StorageError> {
    let (ty, rest) = id.split_first().ok_or_else(|| damaged_record("empty key"))?;
    if *ty != StorageType::ValueState as u8 {
        return Err(damaged_record("value state key"));
    }
    let (epoch, name) = rest.split_first_chunk::<8>().ok_or_else(|| damaged_record("key"))?;
    Ok((u64::from_be_bytes(*epoch), name.to_vec()))
}

#[async_trait::async_trait]
impl Database for StoreDb {
    async fn set(&self, record: DbRecord) -> Result<(), StorageError> {
        self.batch_set(vec![record], DbSetState::General).await
    }

    async fn batch_set(
        &self,
        records: Vec<DbRecord>,
        _state: DbSetState,
    ) -> Result<(), StorageError> {
        let mut nodes = Vec::new();
        let mut values = Vec::new();
        for r in &records {
            match r {
                DbRecord::ValueState(v) => values.push(value_row(v)),
                other => nodes.push((other.get_full_binary_id(), encode_record(other))),
            }
        }
        if nodes.is_empty() && values.is_empty() {
            return Ok(());
        }
        self.0.kt_write(nodes, values).await.map_err(storage_err)
    }

    async fn get<St: Storable>(&self, id: &St::StorageKey) -> Result<DbRecord, StorageError> {
        let mut got = self.batch_get::<St>(std::slice::from_ref(id)).await?;
        got.pop().ok_or_else(|| StorageError::NotFound(format!("{:?} {id:?}", St::data_type())))
    }

    async fn batch_get<St: Storable>(
        &self,
        ids: &[St::StorageKey],
    ) -> Result<Vec<DbRecord>, StorageError> {
        let keys: Vec<Vec<u8>> = ids.iter().map(St::get_full_binary_key_id).collect();
        if St::data_type() == StorageType::ValueState {
            let wanted: Vec<(u64, Vec<u8>)> =
                keys.iter().map(|k| parse_value_key(k)).collect::<Result<_, _>>()?;
            let labels: BTreeSet<Vec<u8>> = wanted.iter().map(|(_, l)| l.clone()).collect();
            let states = self.states(labels.into_iter().collect()).await?;
            let mut out = Vec::new();
            for (epoch, label) in wanted {
                if let Some(s) =
                    states.get(&label).and_then(|v| v.iter().find(|s| s.epoch == epoch))
                {
                    out.push(DbRecord::ValueState(s.clone()));
                }
            }
            return Ok(out);
        }
        let rows = self.0.kt_nodes(keys).await.map_err(storage_err)?;
        rows.iter().map(|(_, rec)| decode_record(rec)).collect()
    }

    async fn get_user_data(&self, username: &AkdLabel) -> Result<KeyData, StorageError> {
        let mut states = self.states(vec![username.0.clone()]).await?;
        match states.remove(&username.0) {
            Some(states) if !states.is_empty() => Ok(KeyData { states }),
            _ => Err(StorageError::NotFound("no value state for this label".into())),
        }
    }

    async fn get_user_state(
        &self,
        username: &AkdLabel,
        flag: ValueStateRetrievalFlag,
    ) -> Result<ValueState, StorageError> {
        let data = self.get_user_data(username).await?;
        select(&data.states, flag)
            .cloned()
            .ok_or_else(|| StorageError::NotFound("no value state matches".into()))
    }

    async fn get_user_state_versions(
        &self,
        usernames: &[AkdLabel],
        flag: ValueStateRetrievalFlag,
    ) -> Result<HashMap<AkdLabel, (u64, AkdValue)>, StorageError> {
        let states = self.states(usernames.iter().map(|u| u.0.clone()).collect()).await?;
        let mut out = HashMap::new();
        for (label, v) in states {
            if let Some(s) = select(&v, flag) {
                out.insert(AkdLabel(label), (s.version, s.value.clone()));
            }
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// The directory
// ---------------------------------------------------------------------------------------------

/// A published (epoch, root) with the server's signature over it (docs/KT.md §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRoot {
    /// The epoch.
    pub epoch: u64,
    /// The directory's root hash.
    pub root: [u8; 32],
    /// Ed25519 signature by the KT signing key.
    pub signature: [u8; 64],
}

impl SignedRoot {
    fn from_row(row: &KtEpochRow) -> Result<Self, KtError> {
        let bad = || KtError::Inconsistent(format!("epoch {} is stored damaged", row.epoch));
        Ok(Self {
            epoch: row.epoch,
            root: row.root.as_slice().try_into().map_err(|_| bad())?,
            signature: row.signature.as_slice().try_into().map_err(|_| bad())?,
        })
    }
}

/// What one publication did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The (possibly unchanged) latest epoch.
    pub root: SignedRoot,
    /// Labels whose value changed in this epoch (0: nothing new, no epoch was made).
    pub updates: u64,
}

/// An append-only proof between two epochs, with every signed root of the range.
#[derive(Debug, Clone)]
pub struct AuditAnswer {
    /// The signed roots of epochs `start..=end`.
    pub roots: Vec<SignedRoot>,
    /// akd's `AppendOnlyProof`, protobuf-encoded.
    pub proof: Vec<u8>,
}

/// The key directory.
pub struct Kt {
    dir: Dir,
    store: Arc<dyn Store>,
    signing: KtSigningKey,
    vrf_public: [u8; 32],
    publish_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Kt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kt")
            .field("signing", &self.signing)
            .field("vrf_public", &self.vrf_public)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Kt {
    /// Opens (creating if needed) the directory stored in `store`. Signs and records the
    /// current epoch when the store lacks it (a new directory's empty epoch 0, or an epoch
    /// whose record a crash interrupted); refuses a store whose recorded epochs are ahead of,
    /// or disagree with, the directory.
    pub async fn open(store: Arc<dyn Store>, keys: KtKeys) -> Result<Self, KtError> {
        let vrf = FileVrf(Arc::new(keys.vrf));
        let vrf_public_key = vrf.get_vrf_public_key().await.map_err(akd_err)?;
        let vrf_public: [u8; 32] = vrf_public_key.to_bytes();
        let manager = StorageManager::new_no_cache(StoreDb(store.clone()));
        let dir =
            Dir::new(manager, vrf, AzksParallelismConfig::default()).await.map_err(akd_err)?;
        let kt = Self {
            dir,
            store,
            signing: keys.signing,
            vrf_public,
            publish_lock: tokio::sync::Mutex::new(()),
        };
        let EpochHash(epoch, root) = kt.dir.get_epoch_hash().await.map_err(akd_err)?;
        match kt.store.kt_latest_epoch().await? {
            Some(row) if row.epoch > epoch => {
                return Err(KtError::Inconsistent(format!(
                    "epoch {} is recorded but the directory is at epoch {epoch}",
                    row.epoch
                )));
            }
            Some(row) if row.epoch == epoch => {
                if row.root != root {
                    return Err(KtError::Inconsistent(format!(
                        "the recorded root of epoch {epoch} differs from the directory's"
                    )));
                }
            }
            _ => {
                if let Err(e) = kt.record(epoch, root, 0).await {
                    // Several nodes opening a new directory at once record the same epoch 0:
                    // one insert wins, and the same (epoch, root) recorded is what we wanted.
                    match kt.store.kt_latest_epoch().await? {
                        Some(row) if row.epoch == epoch && row.root == root => {}
                        _ => return Err(e),
                    }
                }
            }
        }
        Ok(kt)
    }

    async fn record(
        &self,
        epoch: u64,
        root: [u8; 32],
        done_upto: u64,
    ) -> Result<SignedRoot, KtError> {
        // docs/KT.md §3: every published (epoch, root) is signed by the KT signing key.
        let signature = self.signing.sign_root(epoch, &root);
        let row = KtEpochRow {
            epoch,
            root: root.to_vec(),
            signature: signature.to_vec(),
            published_at_ms: now_ms(),
        };
        self.store.kt_finish_epoch(row, done_upto).await?;
        Ok(SignedRoot { epoch, root, signature })
    }

    /// The VRF public key (clients verify lookup proofs with it).
    pub fn vrf_public_key(&self) -> [u8; 32] {
        self.vrf_public
    }

    /// The KT signing key's public half (clients verify signed roots with it).
    pub fn signing_public_key(&self) -> [u8; 32] {
        self.signing.public()
    }

    /// The latest signed root.
    pub async fn latest(&self) -> Result<SignedRoot, KtError> {
        let row = self
            .store
            .kt_latest_epoch()
            .await?
            .ok_or_else(|| KtError::Inconsistent("no epoch recorded".into()))?;
        SignedRoot::from_row(&row)
    }

    /// Publishes everything queued as one epoch: each queued username's current value (its
    /// account's [`kt_value`], or the tombstone once deleted). Returns the new signed root, or
    /// the unchanged latest one when no value changed.
    pub async fn publish(&self) -> Result<Published, KtError> {
        let _one_at_a_time = self.publish_lock.lock().await;
        let queued = self.store.kt_dirty(MAX_EPOCH_UPDATES).await?;
        let Some(done_upto) = queued.last().map(|d| d.seq) else {
            return Ok(Published { root: self.latest().await?, updates: 0 });
        };
        let names: BTreeSet<String> = queued.into_iter().map(|d| d.username).collect();
        let labels: Vec<AkdLabel> = names.iter().map(|n| AkdLabel(n.as_bytes().to_vec())).collect();
        let db = StoreDb(self.store.clone());
        let current = db
            .get_user_state_versions(&labels, ValueStateRetrievalFlag::MaxEpoch)
            .await
            .map_err(akd_err)?;
        let mut updates = Vec::with_capacity(names.len());
        for (name, label) in names.iter().zip(labels) {
            let value = match self.store.account_by_username(name).await? {
                Some(a) => kt_value(&a.account_key, &a.device_list),
                // A deleted account: its entry becomes the tombstone; a name registered and
                // deleted between two epochs never enters the directory.
                None if current.contains_key(&label) => kt_tombstone(),
                None => continue,
            };
            if current.get(&label).is_some_and(|(_, v)| v.0 == value) {
                continue;
            }
            updates.push((label, AkdValue(value.to_vec())));
        }
        let before = self.latest().await?;
        let count = updates.len() as u64;
        if updates.is_empty() {
            let row = KtEpochRow {
                epoch: before.epoch,
                root: before.root.to_vec(),
                signature: before.signature.to_vec(),
                published_at_ms: now_ms(),
            };
            self.store.kt_finish_epoch(row, done_upto).await?;
            return Ok(Published { root: before, updates: 0 });
        }
        let EpochHash(epoch, root) = self.dir.publish(updates).await.map_err(akd_err)?;
        let signed = self.record(epoch, root, done_upto).await?;
        metrics::gauge!("parley_kt_epoch").set(epoch as f64);
        metrics::counter!("parley_kt_updates_total").increment(count);
        tracing::info!(epoch, updates = count, "key-transparency epoch published");
        Ok(Published { root: signed, updates: count })
    }

    /// The lookup proof of `username`'s latest value at the latest epoch, protobuf-encoded,
    /// with that epoch's signed root. [`KtError::NotPublished`] when the name has no entry yet.
    pub async fn lookup(&self, username: &str) -> Result<(Vec<u8>, SignedRoot), KtError> {
        let _stable = self.publish_lock.lock().await;
        let label = AkdLabel(username.as_bytes().to_vec());
        if self.store.kt_values(vec![label.0.clone()]).await?.is_empty() {
            return Err(KtError::NotPublished);
        }
        let (proof, EpochHash(epoch, _)) = self.dir.lookup(label).await.map_err(akd_err)?;
        let bytes = akd::proto::specs::types::LookupProof::from(&proof)
            .write_to_bytes()
            .map_err(akd_err)?;
        Ok((bytes, self.signed(epoch).await?))
    }

    /// The complete key-history proof of `username` at the latest epoch, protobuf-encoded,
    /// with that epoch's signed root.
    pub async fn history(&self, username: &str) -> Result<(Vec<u8>, SignedRoot), KtError> {
        let _stable = self.publish_lock.lock().await;
        let label = AkdLabel(username.as_bytes().to_vec());
        if self.store.kt_values(vec![label.0.clone()]).await?.is_empty() {
            return Err(KtError::NotPublished);
        }
        let (proof, EpochHash(epoch, _)) =
            self.dir.key_history(&label, HistoryParams::Complete).await.map_err(akd_err)?;
        let bytes = akd::proto::specs::types::HistoryProof::from(&proof)
            .write_to_bytes()
            .map_err(akd_err)?;
        Ok((bytes, self.signed(epoch).await?))
    }

    /// The append-only proof from epoch `start` to `end` (at most [`MAX_AUDIT_SPAN`] epochs),
    /// with the signed roots of `start..=end`.
    pub async fn audit(&self, start: u64, end: u64) -> Result<AuditAnswer, KtError> {
        let latest = self.latest().await?.epoch;
        if start >= end || end > latest || end - start > MAX_AUDIT_SPAN {
            return Err(KtError::BadRange(format!(
                "need start < end <= {latest} and at most {MAX_AUDIT_SPAN} epochs, got {start}..{end}"
            )));
        }
        let rows =
            self.store.kt_epochs(start, u32::try_from(end - start + 1).unwrap_or(u32::MAX)).await?;
        let roots = rows.iter().map(SignedRoot::from_row).collect::<Result<Vec<_>, _>>()?;
        let expected: Vec<u64> = (start..=end).collect();
        if roots.iter().map(|r| r.epoch).collect::<Vec<_>>() != expected {
            return Err(KtError::Inconsistent(format!(
                "epochs {start}..={end} are not all recorded"
            )));
        }
        let proof = self.dir.audit(start, end).await.map_err(akd_err)?;
        let proof = akd::proto::specs::types::AppendOnlyProof::from(&proof)
            .write_to_bytes()
            .map_err(akd_err)?;
        Ok(AuditAnswer { roots, proof })
    }

    async fn signed(&self, epoch: u64) -> Result<SignedRoot, KtError> {
        let row = self
            .store
            .kt_epochs(epoch, 1)
            .await?
            .into_iter()
            .next()
            .filter(|r| r.epoch == epoch)
            .ok_or_else(|| KtError::Inconsistent(format!("epoch {epoch} is not recorded")))?;
        SignedRoot::from_row(&row)
    }
}

/// The directory with akd's in-memory storage or our store, for benchmarks
/// (docs/BENCHMARKS.md): publish, lookup and audit exactly as the server does, without HTTP.
pub mod bench {
    use super::*;

    type MemDir = akd::Directory<Tc, akd::storage::memory::AsyncInMemoryDatabase, FileVrf>;

    enum Any {
        Mem(MemDir),
        Store(Dir),
    }

    /// A directory to measure.
    pub struct BenchDirectory {
        dir: Any,
        vrf_public: [u8; 32],
    }

    impl std::fmt::Debug for BenchDirectory {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("BenchDirectory").finish_non_exhaustive()
        }
    }

    macro_rules! with_dir {
        ($self:expr, $d:ident => $body:expr) => {
            match &$self.dir {
                Any::Mem($d) => $body,
                Any::Store($d) => $body,
            }
        };
    }

    impl BenchDirectory {
        /// A directory in akd's in-memory storage.
        pub async fn in_memory(keys: KtKeys) -> Result<Self, KtError> {
            let vrf = FileVrf(Arc::new(keys.vrf));
            let vrf_public = vrf.get_vrf_public_key().await.map_err(akd_err)?.to_bytes();
            let m =
                StorageManager::new_no_cache(akd::storage::memory::AsyncInMemoryDatabase::new());
            let dir =
                MemDir::new(m, vrf, AzksParallelismConfig::default()).await.map_err(akd_err)?;
            Ok(Self { dir: Any::Mem(dir), vrf_public })
        }

        /// A directory over our store (the server's adapter).
        pub async fn over_store(store: Arc<dyn Store>, keys: KtKeys) -> Result<Self, KtError> {
            let vrf = FileVrf(Arc::new(keys.vrf));
            let vrf_public = vrf.get_vrf_public_key().await.map_err(akd_err)?.to_bytes();
            let m = StorageManager::new_no_cache(StoreDb(store));
            let dir = Dir::new(m, vrf, AzksParallelismConfig::default()).await.map_err(akd_err)?;
            Ok(Self { dir: Any::Store(dir), vrf_public })
        }

        /// The VRF public key.
        pub fn vrf_public_key(&self) -> [u8; 32] {
            self.vrf_public
        }

        /// Publishes (username, value) pairs as one epoch; returns (epoch, root).
        pub async fn publish(
            &self,
            updates: Vec<(String, [u8; 32])>,
        ) -> Result<(u64, [u8; 32]), KtError> {
            let u: Vec<(AkdLabel, AkdValue)> = updates
                .into_iter()
                .map(|(n, v)| (AkdLabel(n.into_bytes()), AkdValue(v.to_vec())))
                .collect();
            let EpochHash(e, r) = with_dir!(self, d => d.publish(u).await).map_err(akd_err)?;
            Ok((e, r))
        }

        /// A lookup proof (protobuf) with its (epoch, root).
        pub async fn lookup(&self, username: &str) -> Result<(Vec<u8>, u64, [u8; 32]), KtError> {
            let label = AkdLabel(username.as_bytes().to_vec());
            let (p, EpochHash(e, r)) =
                with_dir!(self, d => d.lookup(label).await).map_err(akd_err)?;
            let b = akd::proto::specs::types::LookupProof::from(&p)
                .write_to_bytes()
                .map_err(akd_err)?;
            Ok((b, e, r))
        }

        /// An append-only proof (protobuf) from `start` to `end`.
        pub async fn audit(&self, start: u64, end: u64) -> Result<Vec<u8>, KtError> {
            let p = with_dir!(self, d => d.audit(start, end).await).map_err(akd_err)?;
            akd::proto::specs::types::AppendOnlyProof::from(&p).write_to_bytes().map_err(akd_err)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
    use super::*;
    use akd::tree_node::{TreeNode, TreeNodeType, TreeNodeWithPreviousValue};

    #[test]
    fn records_round_trip() {
        let azks = DbRecord::Azks(DbRecord::build_azks(7, 99));
        assert_eq!(decode_record(&encode_record(&azks)).unwrap(), azks);
        let l = |b: u8, n: u32| NodeLabel::new([b; 32], n);
        let node = TreeNode {
            label: l(1, 8),
            last_epoch: 3,
            min_descendant_epoch: 2,
            parent: l(0, 0),
            node_type: TreeNodeType::Interior,
            left_child: Some(l(2, 9)),
            right_child: None,
            hash: akd::AzksValue([5; 32]),
        };
        let mut prev = node.clone();
        prev.last_epoch = 1;
        prev.node_type = TreeNodeType::Leaf;
        for previous_node in [None, Some(prev)] {
            let rec = DbRecord::TreeNode(TreeNodeWithPreviousValue {
                label: l(1, 8),
                latest_node: node.clone(),
                previous_node,
            });
            assert_eq!(decode_record(&encode_record(&rec)).unwrap(), rec);
        }
        // Damaged records are refused, never misread.
        let mut bad = encode_record(&azks);
        bad.push(0);
        assert!(decode_record(&bad).is_err());
        assert!(decode_record(&[9]).is_err());
        assert!(decode_record(&[]).is_err());
    }
}
