//! Newtypes for the symmetric secrets of the ratchet. Each is zeroized on drop, is not `Copy`,
//! has a redacted `Debug`, and leaves as raw bytes only through `expose()` (greppable).

use zeroize::{Zeroize, ZeroizeOnDrop};

macro_rules! secret32 {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Zeroize, ZeroizeOnDrop)]
        pub(crate) struct $name([u8; 32]);

        impl $name {
            pub(crate) fn new(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            /// The raw key bytes: the one exit, used by key derivations and serialization.
            pub(crate) fn expose(&self) -> &[u8; 32] {
                &self.0
            }
        }

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(concat!(stringify!($name), "(***)"))
            }
        }
    };
}

secret32!(
    /// The Double Ratchet root key (RK, Double Ratchet §3.2).
    RootKey
);
secret32!(
    /// A sending or receiving chain key (CKs / CKr, Double Ratchet §3.2).
    ChainKey
);
secret32!(
    /// A message key (Double Ratchet §2.2), used once.
    MessageKey
);
