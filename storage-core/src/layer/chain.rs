//! Docker's layer identities: the diff-id of a layer is the sha256 of its
//! uncompressed tar; its chain-id is the diff-id for a base layer and
//! `sha256(parent-chain-id + " " + diff-id)` above it.

use sha2::{Digest, Sha256};

/// The chain-id of a layer with `diff_id` on top of `parent` (a chain-id).
pub fn chain_id(parent: Option<&str>, diff_id: &str) -> String {
    match parent {
        None => diff_id.to_string(),
        Some(parent) => {
            let digest = Sha256::digest(format!("{parent} {diff_id}").as_bytes());
            format!("sha256:{}", hex::encode(digest))
        }
    }
}

/// The chain-ids of a stack of diff-ids, base first (an image's
/// `rootfs.diff_ids`).
pub fn chain_ids<S: AsRef<str>>(diff_ids: &[S]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = chain_id(ids.last().map(String::as_str), diff_id.as_ref());
        ids.push(next);
    }
    ids
}

/// Whether `id` is a `sha256:` digest of 64 lowercase hex digits.
pub fn is_digest(id: &str) -> bool {
    id.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_chain_id_is_the_diff_id_and_children_hash_the_pair() {
        let a = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
        let b = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
        let ids = chain_ids(&[a, b]);
        assert_eq!(ids[0], a);
        let expected = format!("sha256:{}", hex::encode(Sha256::digest(format!("{a} {b}"))));
        assert_eq!(ids[1], expected);
        assert!(is_digest(&ids[1]));
        assert!(!is_digest("sha256:xyz"));
    }
}
