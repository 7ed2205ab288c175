//! Image references as Docker's `distribution/reference` package parses and
//! normalizes them: `busybox` is `docker.io/library/busybox:latest`, stored
//! and printed in its familiar form (`busybox:latest`); a registry with a
//! dot, a port or `localhost` keeps its domain (`localhost:5000/app:v1`).

use super::ImageError;

const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
/// The tag a reference without one means.
pub const DEFAULT_TAG: &str = "latest";
const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// A normalized reference: domain, path, optional tag and digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

fn invalid(reference: &str, why: impl Into<String>) -> ImageError {
    ImageError::InvalidReference {
        reference: reference.to_string(),
        why: why.into(),
    }
}

/// Whether `s` is 64 lowercase hex digits (a full image id without
/// `sha256:`), which Docker refuses as a repository name.
pub fn is_hex_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum_lower(b[0]) || !is_alnum_lower(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum_lower(b[i]) {
            i += 1;
            continue;
        }
        // A separator run, followed by an alphanumeric (checked above for
        // the last byte).
        let start = i;
        while i < b.len() && !is_alnum_lower(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum_lower(b: u8) -> bool {
    b.is_ascii_digit() || b.is_ascii_lowercase()
}

/// `domain-component(.domain-component)*(:port)?`, or a bracketed IPv6
/// address with an optional port.
fn is_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        let Some(end) = rest.find(']') else {
            return false;
        };
        let addr = &rest[..end];
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        let after = &rest[end + 1..];
        match after.strip_prefix(':') {
            Some(port) => ("", Some(port)),
            None if after.is_empty() => ("", None),
            None => return false,
        }
    } else {
        match d.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    if d.starts_with('[') {
        return true;
    }
    !host.is_empty()
        && host.split('.').all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
        })
}

/// `[\w][\w.-]{0,127}`
fn is_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

/// `algorithm:hex`; sha256 must have 64 lowercase hex digits.
fn is_digest(d: &str) -> bool {
    let Some((alg, hex)) = d.split_once(':') else {
        return false;
    };
    let alg_ok = alg.split(['-', '_', '+', '.']).all(|c| {
        c.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
            && c.bytes().all(|b| b.is_ascii_alphanumeric())
    });
    if !alg_ok || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return false;
    }
    alg != "sha256" || is_hex_id(hex)
}

/// Docker's `splitDockerDomain`.
fn split_docker_domain(name: &str) -> (String, String) {
    let (mut domain, mut remainder) = match name.find('/') {
        Some(i)
            if name[..i].contains(['.', ':'])
                || &name[..i] == "localhost"
                || name[..i].to_lowercase() != name[..i] =>
        {
            (name[..i].to_string(), name[i + 1..].to_string())
        }
        _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    };
    if domain == LEGACY_DEFAULT_DOMAIN {
        domain = DEFAULT_DOMAIN.to_string();
    }
    if domain == DEFAULT_DOMAIN && !remainder.contains('/') {
        remainder = format!("{OFFICIAL_REPO_PREFIX}{remainder}");
    }
    (domain, remainder)
}

impl Reference {
    /// Parses and normalizes `s` as `ParseNormalizedNamed` does.
    pub fn parse(s: &str) -> Result<Self, ImageError> {
        if is_hex_id(s) {
            return Err(invalid(
                s,
                "cannot use a 64-character hexadecimal string as a repository name",
            ));
        }
        if s.is_empty() {
            return Err(invalid(s, "empty reference"));
        }
        let (domain, remainder) = split_docker_domain(s);
        let remote_name = remainder.split(':').next().unwrap_or_default();
        if remote_name.to_lowercase() != remote_name {
            return Err(invalid(s, "repository name must be lowercase"));
        }
        let (rest, digest) = match remainder.split_once('@') {
            Some((r, d)) => {
                if !is_digest(d) {
                    return Err(invalid(s, format!("invalid digest {d:?}")));
                }
                (r, Some(d.to_string()))
            }
            None => (remainder.as_str(), None),
        };
        let (path, tag) = match rest.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') => {
                if !is_tag(t) {
                    return Err(invalid(s, format!("invalid tag {t:?}")));
                }
                (p, Some(t.to_string()))
            }
            _ => (rest, None),
        };
        if !is_domain(&domain) {
            return Err(invalid(s, format!("invalid registry domain {domain:?}")));
        }
        if let Some(bad) = path.split('/').find(|c| !is_path_component(c)) {
            return Err(invalid(
                s,
                format!("invalid repository name component {bad:?}"),
            ));
        }
        if domain.len() + 1 + path.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(invalid(s, "repository name longer than 255 characters"));
        }
        Ok(Reference {
            domain,
            path: path.to_string(),
            tag,
            digest,
        })
    }

    /// Parses `s` and adds the `latest` tag when it has neither tag nor
    /// digest (`TagNameOnly`).
    pub fn parse_tagged(s: &str) -> Result<Self, ImageError> {
        Ok(Self::parse(s)?.with_default_tag())
    }

    /// This reference with the `latest` tag when it has neither tag nor digest.
    pub fn with_default_tag(mut self) -> Self {
        if self.tag.is_none() && self.digest.is_none() {
            self.tag = Some(DEFAULT_TAG.to_string());
        }
        self
    }

    /// The fully qualified name, `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The name as Docker shows it, `busybox` (the key of
    /// `repositories.json`).
    pub fn familiar_name(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            match self.path.strip_prefix(OFFICIAL_REPO_PREFIX) {
                Some(short) if !short.contains('/') => short.to_string(),
                _ => self.path.clone(),
            }
        } else {
            format!("{}/{}", self.domain, self.path)
        }
    }

    /// `busybox:latest`, `app@sha256:...`, as Docker shows and stores it.
    pub fn familiar_string(&self) -> String {
        let mut s = self.familiar_name();
        if let Some(tag) = &self.tag {
            s.push(':');
            s.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            s.push('@');
            s.push_str(digest);
        }
        s
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// Whether the reference is a bare name (no tag, no digest).
    pub fn is_name_only(&self) -> bool {
        self.tag.is_none() && self.digest.is_none()
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.familiar_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fam(s: &str) -> String {
        Reference::parse_tagged(s).unwrap().familiar_string()
    }

    #[test]
    fn normalizes_like_docker() {
        assert_eq!(fam("busybox"), "busybox:latest");
        assert_eq!(fam("library/busybox:1.36"), "busybox:1.36");
        assert_eq!(fam("docker.io/library/busybox"), "busybox:latest");
        assert_eq!(fam("index.docker.io/foo/bar:x"), "foo/bar:x");
        assert_eq!(fam("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(fam("localhost/app:v1"), "localhost/app:v1");
        assert_eq!(fam("reg.example.com/a/b/c:t"), "reg.example.com/a/b/c:t");
        assert_eq!(fam("a__b.c-d---e"), "a__b.c-d---e:latest");
        let d = format!("app@sha256:{}", "a".repeat(64));
        assert_eq!(fam(&d), d);
        let r = Reference::parse("busybox").unwrap();
        assert!(r.is_name_only());
        assert_eq!(r.name(), "docker.io/library/busybox");
        assert_eq!(r.familiar_name(), "busybox");
    }

    #[test]
    fn refuses_what_docker_refuses() {
        for bad in [
            "",
            "Busybox",
            "busy box",
            "a..b",
            "-a",
            "a-",
            "a:",
            "a:-x",
            "a@sha256:12",
            &"a".repeat(64).replace('a', "b"),
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Reference::parse(&"0123456789abcdef".repeat(4)).is_err());
    }
}
