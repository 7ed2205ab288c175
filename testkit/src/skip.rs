//! The skip rule: a test skips only when it cannot run here (no root) or the
//! kernel truly lacks a feature, and then prints exactly one line saying
//! which and why.

use std::fmt::Display;

/// Whether the test runs as root; otherwise prints
/// `skipped: <test>: needs root` and returns false.
pub fn require_root(test: &str) -> bool {
    let root = nix::unistd::Uid::effective().is_root();
    if !root {
        println!("{}", root_line(test));
    }
    root
}

/// Returns `available`; when false, prints
/// `skipped: <feature> unavailable: <why>`.
pub fn feature_available(available: bool, feature: &str, why: impl Display) -> bool {
    if !available {
        println!("{}", feature_line(feature, &why));
    }
    available
}

fn root_line(test: &str) -> String {
    format!("skipped: {test}: needs root")
}

fn feature_line(feature: &str, why: &dyn Display) -> String {
    // The skip line is one line, whatever `why` contains.
    let why = why.to_string().replace('\n', " ");
    format!("skipped: {feature} unavailable: {why}")
}

/// Returns from the calling test (after the one skip line) unless it runs as
/// root; the test name is the calling function's path.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::require_root($crate::__function_name!()) {
            return;
        }
    };
}

/// `skip_unless!(condition, "feature", why)` returns from the calling test
/// after printing `skipped: <feature> unavailable: <why>` when `condition`
/// is false. `why` is evaluated only then. For a test returning a value:
/// `skip_unless!(condition, "feature", why, return Ok(()))`.
#[macro_export]
macro_rules! skip_unless {
    ($condition:expr, $feature:expr, $why:expr $(,)?) => {
        if !($condition) {
            $crate::feature_available(false, $feature, $why);
            return;
        }
    };
    ($condition:expr, $feature:expr, $why:expr, return $ret:expr) => {
        if !($condition) {
            $crate::feature_available(false, $feature, $why);
            return $ret;
        }
    };
}

/// The path of the enclosing function, e.g. `scratch::ext4_mounts`.
#[doc(hidden)]
#[macro_export]
macro_rules! __function_name {
    () => {{
        fn f() {}
        let name = ::std::any::type_name_of_val(&f);
        name.strip_suffix("::f").unwrap_or(name)
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_have_the_project_format() {
        assert_eq!(root_line("a::b"), "skipped: a::b: needs root");
        assert_eq!(
            feature_line("overlay metacopy", &"mount: EINVAL\nagain"),
            "skipped: overlay metacopy unavailable: mount: EINVAL again"
        );
    }

    #[test]
    fn function_name_is_the_callers_path() {
        assert_eq!(
            crate::__function_name!(),
            "testkit::skip::tests::function_name_is_the_callers_path"
        );
    }

    fn skipping() -> u32 {
        crate::skip_unless!(false, "nothing", "by design", return 7);
        0
    }

    #[test]
    fn skip_unless_returns_early() {
        assert_eq!(skipping(), 7);
    }
}
