//! The server's franking keys (docs/PROTOCOL.md §12.4, docs/OPERATIONS.md "Franking keys").
//!
//! The keyring lives in the data folder, never in the database (the store holds only public
//! data and ciphertext):
//!
//! ```text
//! DATA/franking/            (0700)
//!   keyring.toml            kid, created_at, retired_at (Unix seconds) of every key
//!   1.key, 2.key, …         32 raw bytes each (0600)
//! ```
//!
//! Exactly one key is active: it tags every relayed message (`RF`). [`Keyring::rotate`] makes a
//! new key (kid = highest + 1) and retires the previous one; a retired key still verifies
//! reports for the grace period (`franking_grace_secs`) after its retirement, then its tags are
//! refused as "retired". Every change is persisted atomically (temporary file, fsync, rename,
//! fsync of the folder) before it takes effect in memory.
//!
//! With a master key (several nodes on one database) the keyring is not in files but in the
//! database, sealed as the secret `franking-keyring` ([`crate::secrets`]), encoded by
//! [`Keyring::to_secret`]: 52 bytes per key, `kid (u32 BE) || created_at (u64 BE) ||
//! retired_at (u64 BE, u64::MAX = active) || key[32]`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use parley_proto::{FrankingKey, KeyStatus};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The keyring's folder inside the data folder.
pub const FRANKING_DIR: &str = "franking";
/// The keyring's index file.
pub const KEYRING_FILE: &str = "keyring.toml";
/// Bytes per key in [`Keyring::to_secret`]'s encoding.
const SECRET_ENTRY: usize = 4 + 8 + 8 + 32;

/// Why the keyring could not be loaded or changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyringError {
    /// A file or folder could not be read or written.
    #[error("franking keyring: cannot use {path}: {reason}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The keyring's files are inconsistent.
    #[error("franking keyring {path} is damaged: {reason}")]
    Damaged {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No key id is left (2^32 − 1 rotations).
    #[error("franking keyring: no key id left")]
    Exhausted,
    /// The keyring stored in the database is malformed.
    #[error("franking keyring in the database is damaged: {0}")]
    Secret(String),
}

fn io(path: &Path, e: impl std::fmt::Display) -> KeyringError {
    KeyringError::Io { path: path.to_path_buf(), reason: e.to_string() }
}

fn damaged(path: &Path, reason: impl Into<String>) -> KeyringError {
    KeyringError::Damaged { path: path.to_path_buf(), reason: reason.into() }
}

/// One line of `keyring.toml` (public metadata only; the key bytes are in `<kid>.key`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyMeta {
    kid: u32,
    created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retired_at: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFile {
    #[serde(default)]
    keys: Vec<KeyMeta>,
}

struct Entry {
    key: FrankingKey,
    created_at: u64,
    retired_at: Option<u64>,
}

/// The loaded keyring. `Debug` shows key ids and times, never key bytes.
pub struct Keyring {
    /// The folder it is persisted in; `None` when the database holds it (the caller persists).
    dir: Option<PathBuf>,
    keys: BTreeMap<u32, Entry>,
    active: u32,
    grace_secs: u64,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self { dir, keys, active, grace_secs } = self;
        let ids: Vec<(u32, u64, Option<u64>)> =
            keys.iter().map(|(kid, e)| (*kid, e.created_at, e.retired_at)).collect();
        f.debug_struct("Keyring")
            .field("dir", dir)
            .field("active", active)
            .field("grace_secs", grace_secs)
            .field("keys", &ids)
            .finish()
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder (mode 0600),
/// fsynced, renamed over `path`, then the folder fsynced.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), KeyringError> {
    let dir = path.parent().ok_or_else(|| damaged(path, "no parent folder"))?;
    let name = path.file_name().ok_or_else(|| damaged(path, "no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(|e| io(&tmp, e))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(|e| io(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), KeyringError> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn create_private_dir(dir: &Path) -> Result<(), KeyringError> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(|e| io(dir, e))?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

fn key_path(dir: &Path, kid: u32) -> PathBuf {
    dir.join(format!("{kid}.key"))
}

fn read_key(dir: &Path, kid: u32) -> Result<FrankingKey, KeyringError> {
    let path = key_path(dir, kid);
    let bytes = Zeroizing::new(std::fs::read(&path).map_err(|e| io(&path, e))?);
    let raw: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| damaged(&path, format!("{} bytes, expected 32", bytes.len())))?;
    let raw = Zeroizing::new(raw);
    Ok(FrankingKey::from_bytes(*raw))
}

impl Keyring {
    /// Loads `DATA/franking/`, creating it with key 1 at the first start. A folder that holds
    /// key files but no `keyring.toml` is refused (rather than silently replaced).
    pub fn open(data_dir: &Path, grace_secs: u64, now_secs: u64) -> Result<Self, KeyringError> {
        let dir = data_dir.join(FRANKING_DIR);
        let index = dir.join(KEYRING_FILE);
        let text = match std::fs::read_to_string(&index) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&index, e)),
        };
        let Some(text) = text else {
            return Self::create(dir, grace_secs, now_secs);
        };
        let file: KeyringFile =
            toml::from_str(&text).map_err(|e| damaged(&index, e.to_string()))?;
        let mut keys = BTreeMap::new();
        let mut active = None;
        for meta in file.keys {
            if meta.retired_at.is_none() {
                if active.is_some() {
                    return Err(damaged(&index, "more than one active key"));
                }
                active = Some(meta.kid);
            }
            let entry = Entry {
                key: read_key(&dir, meta.kid)?,
                created_at: meta.created_at,
                retired_at: meta.retired_at,
            };
            if keys.insert(meta.kid, entry).is_some() {
                return Err(damaged(&index, format!("key id {} listed twice", meta.kid)));
            }
        }
        let active = active.ok_or_else(|| damaged(&index, "no active key"))?;
        Ok(Self { dir: Some(dir), keys, active, grace_secs })
    }

    /// Loads `DATA/franking/` if it holds a keyring (`None` if there is none); creates nothing.
    pub fn open_existing(data_dir: &Path, grace_secs: u64) -> Result<Option<Self>, KeyringError> {
        let index = data_dir.join(FRANKING_DIR).join(KEYRING_FILE);
        match std::fs::metadata(&index) {
            Ok(_) => Self::open(data_dir, grace_secs, 0).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&index, e)),
        }
    }

    /// A new keyring held in memory only (its owner stores it in the database): key 1, active.
    pub fn generate(grace_secs: u64, now_secs: u64) -> Self {
        let mut keys = BTreeMap::new();
        let key = FrankingKey::generate(&mut rand::rng());
        keys.insert(1, Entry { key, created_at: now_secs, retired_at: None });
        Self { dir: None, keys, active: 1, grace_secs }
    }

    /// The keyring encoded for the database (module docs). Holds key bytes: zeroized on drop.
    pub fn to_secret(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(self.keys.len() * SECRET_ENTRY));
        for (kid, e) in &self.keys {
            out.extend_from_slice(&kid.to_be_bytes());
            out.extend_from_slice(&e.created_at.to_be_bytes());
            out.extend_from_slice(&e.retired_at.unwrap_or(u64::MAX).to_be_bytes());
            out.extend_from_slice(e.key.expose_secret());
        }
        out
    }

    /// Decodes [`Keyring::to_secret`]'s encoding into an in-memory keyring. Exactly one key must
    /// be active and key ids must be unique.
    pub fn from_secret(bytes: &[u8], grace_secs: u64) -> Result<Self, KeyringError> {
        let bad = |m: &str| KeyringError::Secret(m.to_string());
        if bytes.is_empty() || !bytes.len().is_multiple_of(SECRET_ENTRY) {
            return Err(bad("its length is not a whole number of keys"));
        }
        let mut keys = BTreeMap::new();
        let mut active = None;
        for chunk in bytes.chunks_exact(SECRET_ENTRY) {
            let (kid, rest) = chunk.split_first_chunk::<4>().ok_or_else(|| bad("short"))?;
            let (created, rest) = rest.split_first_chunk::<8>().ok_or_else(|| bad("short"))?;
            let (retired, rest) = rest.split_first_chunk::<8>().ok_or_else(|| bad("short"))?;
            let key: &[u8; 32] = rest.try_into().map_err(|_| bad("short"))?;
            let kid = u32::from_be_bytes(*kid);
            let retired_at = match u64::from_be_bytes(*retired) {
                u64::MAX => None,
                r => Some(r),
            };
            if retired_at.is_none() {
                if active.is_some() {
                    return Err(bad("more than one active key"));
                }
                active = Some(kid);
            }
            let raw = Zeroizing::new(*key);
            let entry = Entry {
                key: FrankingKey::from_bytes(*raw),
                created_at: u64::from_be_bytes(*created),
                retired_at,
            };
            if kid == 0 || keys.insert(kid, entry).is_some() {
                return Err(bad("a key id is zero or listed twice"));
            }
        }
        let active = active.ok_or_else(|| bad("no active key"))?;
        Ok(Self { dir: None, keys, active, grace_secs })
    }

    /// Detaches the keyring from its folder (it is moved into the database).
    pub fn into_memory(mut self) -> Self {
        self.dir = None;
        self
    }

    fn create(dir: PathBuf, grace_secs: u64, now_secs: u64) -> Result<Self, KeyringError> {
        if dir.exists() {
            let leftovers = std::fs::read_dir(&dir)
                .map_err(|e| io(&dir, e))?
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().ends_with(".key"));
            if leftovers {
                return Err(damaged(
                    &dir,
                    "key files without keyring.toml; restore keyring.toml from a backup",
                ));
            }
        }
        create_private_dir(&dir)?;
        let key = FrankingKey::generate(&mut rand::rng());
        write_atomic(&key_path(&dir, 1), key.expose_secret())?;
        let mut ring = Self { dir: Some(dir), keys: BTreeMap::new(), active: 1, grace_secs };
        ring.keys.insert(1, Entry { key, created_at: now_secs, retired_at: None });
        ring.persist_index(&ring.index())?;
        Ok(ring)
    }

    fn index(&self) -> KeyringFile {
        KeyringFile {
            keys: self
                .keys
                .iter()
                .map(|(kid, e)| KeyMeta {
                    kid: *kid,
                    created_at: e.created_at,
                    retired_at: e.retired_at,
                })
                .collect(),
        }
    }

    fn persist_index(&self, file: &KeyringFile) -> Result<(), KeyringError> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let path = dir.join(KEYRING_FILE);
        let text = toml::to_string(file).map_err(|e| damaged(&path, e.to_string()))?;
        let text = format!(
            "# Parley franking keyring: key ids and times (Unix seconds). The keys are <kid>.key.\n{text}"
        );
        write_atomic(&path, text.as_bytes())
    }

    /// The keyring's folder (`None` when it lives in the database).
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The active key id.
    pub fn active_kid(&self) -> u32 {
        self.active
    }

    /// Retired key ids still inside their grace period at `now_secs`.
    pub fn in_grace(&self, now_secs: u64) -> Vec<u32> {
        self.keys
            .iter()
            .filter(|(_, e)| {
                e.retired_at.is_some_and(|r| now_secs < r.saturating_add(self.grace_secs))
            })
            .map(|(kid, _)| *kid)
            .collect()
    }

    /// The server tag of a relayed message under the active key: `(kid, RF)`
    /// (docs/PROTOCOL.md §12.4).
    pub fn tag(
        &self,
        tf: &[u8; 32],
        sender: &str,
        sender_device: u32,
        recipient: &str,
        server_time_ms: u64,
    ) -> Result<(u32, [u8; 32]), KeyringError> {
        let entry = self
            .keys
            .get(&self.active)
            .ok_or_else(|| KeyringError::Secret("the active key is missing".into()))?;
        let rf = parley_proto::server_tag(
            &entry.key,
            tf,
            sender,
            sender_device,
            recipient,
            server_time_ms,
        );
        Ok((self.active, rf))
    }

    /// What a moderator may rely on for key `kid` at `now_secs`: the active key, and retired
    /// keys until `retired_at + grace`, are [`KeyStatus::Active`]; retired keys past their
    /// grace are [`KeyStatus::Retired`]; anything else is [`KeyStatus::Unknown`].
    pub fn status(&self, kid: u32, now_secs: u64) -> KeyStatus<'_> {
        match self.keys.get(&kid) {
            None => KeyStatus::Unknown,
            Some(e) => match e.retired_at {
                None => KeyStatus::Active(&e.key),
                Some(r) if now_secs < r.saturating_add(self.grace_secs) => {
                    KeyStatus::Active(&e.key)
                }
                Some(_) => KeyStatus::Retired,
            },
        }
    }

    /// Makes a new active key (kid = highest + 1) and retires the current one at `now_secs`.
    /// For a file keyring the new key file and the index are on disk before the change takes
    /// effect in memory; on error nothing changes. A database keyring changes in memory only:
    /// the caller stores [`Keyring::to_secret`].
    pub fn rotate(&mut self, now_secs: u64) -> Result<u32, KeyringError> {
        let highest = self.keys.keys().next_back().copied().unwrap_or(0);
        let kid = highest.checked_add(1).ok_or(KeyringError::Exhausted)?;
        let key = FrankingKey::generate(&mut rand::rng());
        // A key file left by a rotation that failed before the index was written was never
        // used: overwriting it is safe.
        if let Some(dir) = &self.dir {
            write_atomic(&key_path(dir, kid), key.expose_secret())?;
        }
        let mut file = self.index();
        for m in &mut file.keys {
            if m.kid == self.active {
                m.retired_at = Some(now_secs);
            }
        }
        file.keys.push(KeyMeta { kid, created_at: now_secs, retired_at: None });
        self.persist_index(&file)?;
        if let Some(prev) = self.keys.get_mut(&self.active) {
            prev.retired_at = Some(now_secs);
        }
        self.keys.insert(kid, Entry { key, created_at: now_secs, retired_at: None });
        self.active = kid;
        Ok(kid)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn created_loaded_rotated_and_graced() {
        let dir = tempfile::tempdir().unwrap();
        let mut ring = Keyring::open(dir.path(), 100, 1_000).unwrap();
        assert_eq!(ring.active_kid(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(ring.dir().unwrap()), 0o700);
            assert_eq!(mode(&ring.dir().unwrap().join("1.key")), 0o600);
        }
        let tf = [7u8; 32];
        let (kid, rf) = ring.tag(&tf, "alice", 1, "bob", 5).unwrap();
        assert_eq!(kid, 1);
        assert_eq!(ring.rotate(2_000).unwrap(), 2);
        assert_eq!(ring.in_grace(2_050), [1]);
        let KeyStatus::Active(k1) = ring.status(1, 2_099) else { panic!("in grace") };
        assert!(parley_proto::verify_server_tag(k1, &tf, "alice", 1, "bob", 5, &rf));
        assert!(matches!(ring.status(1, 2_100), KeyStatus::Retired));
        assert!(matches!(ring.status(2, 9_999_999), KeyStatus::Active(_)));
        assert!(matches!(ring.status(3, 0), KeyStatus::Unknown));
        // Reloaded from disk: the same keys and times.
        let again = Keyring::open(dir.path(), 100, 3_000).unwrap();
        assert_eq!(again.active_kid(), 2);
        let KeyStatus::Active(k1) = again.status(1, 2_099) else { panic!("reloaded") };
        assert!(parley_proto::verify_server_tag(k1, &tf, "alice", 1, "bob", 5, &rf));
        assert!(matches!(again.status(1, 2_100), KeyStatus::Retired));
        // Debug never shows key bytes.
        let shown = format!("{again:?}");
        assert!(shown.contains("active: 2") && !shown.contains("key:"), "{shown}");
    }

    #[test]
    fn damaged_keyrings_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Keyring::open(dir.path(), 100, 1_000).unwrap();
        let index = ring.dir().unwrap().join(KEYRING_FILE);
        std::fs::write(ring.dir().unwrap().join("1.key"), [0u8; 31]).unwrap();
        assert!(matches!(Keyring::open(dir.path(), 100, 1), Err(KeyringError::Damaged { .. })));
        std::fs::remove_file(&index).unwrap();
        let err = Keyring::open(dir.path(), 100, 1).unwrap_err();
        assert!(err.to_string().contains("without keyring.toml"), "{err}");
    }

    #[test]
    fn database_keyrings_round_trip_and_reject_damage() {
        let mut ring = Keyring::generate(100, 1_000);
        assert!(ring.dir().is_none());
        let tf = [3u8; 32];
        let (_, rf) = ring.tag(&tf, "alice", 1, "bob", 5).unwrap();
        assert_eq!(ring.rotate(2_000).unwrap(), 2);
        let bytes = ring.to_secret();
        assert_eq!(bytes.len(), 2 * SECRET_ENTRY);
        let again = Keyring::from_secret(&bytes, 100).unwrap();
        assert_eq!(again.active_kid(), 2);
        assert_eq!(again.in_grace(2_050), [1]);
        let KeyStatus::Active(k1) = again.status(1, 2_050) else { panic!("key 1 in grace") };
        assert!(parley_proto::verify_server_tag(k1, &tf, "alice", 1, "bob", 5, &rf));
        for bad in [&bytes[..0], &bytes[..51], &bytes[..SECRET_ENTRY]] {
            // The first entry alone is a retired key: no active key.
            assert!(Keyring::from_secret(bad, 100).is_err());
        }
        let mut twice = bytes.to_vec();
        twice.extend_from_slice(&bytes[SECRET_ENTRY..]);
        assert!(Keyring::from_secret(&twice, 100).is_err(), "two active keys");
        // A file keyring is imported as is.
        let dir = tempfile::tempdir().unwrap();
        assert!(Keyring::open_existing(dir.path(), 100).unwrap().is_none());
        let file = Keyring::open(dir.path(), 100, 7).unwrap();
        let imported = Keyring::open_existing(dir.path(), 100).unwrap().unwrap().into_memory();
        assert!(imported.dir().is_none());
        assert_eq!(imported.to_secret(), file.to_secret());
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_keyrings_never_panics(bytes in proptest::collection::vec(0u8.., 0..300)) {
            if let Ok(ring) = Keyring::from_secret(&bytes, 10) {
                // What decodes survives a round trip (keys come back sorted by id).
                let again = Keyring::from_secret(&ring.to_secret(), 10).unwrap();
                proptest::prop_assert_eq!(again.to_secret(), ring.to_secret());
            }
        }
    }
}
