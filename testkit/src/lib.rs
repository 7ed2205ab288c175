//! testkit: what every privileged test of layerscope reuses.
//!
//! - [`ScratchFs`]: a loop-backed ext4, xfs or btrfs filesystem (or a tmpfs)
//!   in its own temp dir, torn down on drop, also when the test panicked.
//! - [`MountGuard`]: unmounts a mount the test made itself on drop.
//! - [`require_root()`] (or `require_root!()`), [`skip_unless!`]: the one-line skip rule.
//! - [`LeakCheck`]: asserts a test left no mount or loop device behind,
//!   looking only at paths the check itself owns, so parallel tests never
//!   raise false alarms.

pub mod docker;
mod error;
pub mod fs_kind;
pub mod leak_check;
pub mod loops;
pub mod mount_guard;
pub mod mountinfo;
pub mod scratch;
pub mod skip;
pub mod unmount;

pub use error::TestkitError;
pub use fs_kind::FsKind;
pub use leak_check::{Leak, LeakCheck, Snapshot};
pub use mount_guard::MountGuard;
pub use scratch::ScratchFs;
pub use skip::{feature_available, require_root};

/// Result with [`TestkitError`].
pub type Result<T, E = TestkitError> = std::result::Result<T, E>;
