//! What `watch` was asked to follow: a commit (full sha or prefix), a pull request (number,
//! `#N` or URL), or the branch head. Parsing only; resolving asks GitHub or the exporter.

use super::WatchError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The newest commit on the tracked branch.
    Head,
    /// A full sha or a prefix of at least 4 hex digits, lowercased.
    Sha(String),
    /// A pull request of the tracked repository; it is followed through its merge commit.
    Pull(u64),
}

/// A bare number of at most this many digits is a pull request number; longer all-digit
/// strings are sha prefixes (PR numbers stay far below a million; a 7-digit prefix is a sha).
const MAX_PR_DIGITS: usize = 6;

/// Parse the target argument. `repository` is `owner/name`, to accept only that repository's
/// pull request URLs.
pub fn parse(arg: Option<&str>, repository: &str) -> Result<Target, WatchError> {
    let Some(raw) = arg.map(str::trim) else { return Ok(Target::Head) };
    let bad = |why: String| WatchError::BadTarget { target: raw.to_string(), why };
    if raw.is_empty() {
        return Err(bad("empty".into()));
    }
    if raw.contains("://") || raw.starts_with("github.com/") {
        // https://github.com/OWNER/NAME/pull/N[/files|#...]
        let path = raw.split_once("github.com/").map(|(_, p)| p).ok_or_else(|| bad("not a GitHub URL".into()))?;
        let path = path.split(['#', '?']).next().unwrap_or_default();
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match parts.as_slice() {
            [owner, name, "pull", n, ..] => {
                if !format!("{owner}/{name}").eq_ignore_ascii_case(repository) {
                    return Err(bad(format!("a pull request of {owner}/{name}, not of the tracked {repository}")));
                }
                return number(n).map(Target::Pull).ok_or_else(|| bad(format!("{n:?} is not a PR number")));
            }
            [owner, name, "commit", sha, ..] => {
                if !format!("{owner}/{name}").eq_ignore_ascii_case(repository) {
                    return Err(bad(format!("a commit of {owner}/{name}, not of the tracked {repository}")));
                }
                return sha_prefix(sha).ok_or_else(|| bad(format!("{sha:?} is not a commit sha")));
            }
            _ => return Err(bad("expected https://github.com/OWNER/NAME/pull/N or .../commit/SHA".into())),
        }
    }
    if let Some(n) = raw.strip_prefix('#') {
        return number(n).map(Target::Pull).ok_or_else(|| bad("expected #NUMBER".into()));
    }
    if raw.bytes().all(|b| b.is_ascii_digit()) && raw.len() <= MAX_PR_DIGITS {
        return number(raw).map(Target::Pull).ok_or_else(|| bad("not a PR number".into()));
    }
    sha_prefix(raw).ok_or_else(|| {
        bad("expected a commit sha (or a prefix of at least 4 hex digits), a PR number, #N or a PR URL".into())
    })
}

fn number(s: &str) -> Option<u64> {
    s.parse::<u64>().ok().filter(|n| *n > 0)
}

fn sha_prefix(s: &str) -> Option<Target> {
    (s.len() >= 4 && s.len() <= 40 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| Target::Sha(s.to_ascii_lowercase()))
}

/// Whether GitHub's latest reviews approve the pull request: each reviewer's latest
/// approving or change-requesting review counts (comments do not replace them), at least one
/// approves and none requests changes. GitHub's own rule for "1 approving review required".
pub fn approved(reviews: &[crate::sources::github::ReviewInfo]) -> bool {
    let mut latest: std::collections::BTreeMap<&str, (&str, Option<i64>, usize)> = Default::default();
    for (i, r) in reviews.iter().enumerate() {
        let state = r.state.as_str();
        if !matches!(state, "APPROVED" | "CHANGES_REQUESTED" | "DISMISSED") {
            continue;
        }
        let who = r.user.as_deref().unwrap_or("");
        let key = (r.submitted_at, i);
        match latest.get(who) {
            Some((_, t, j)) if (*t, *j) > key => {}
            _ => {
                latest.insert(who, (state, r.submitted_at, i));
            }
        }
    }
    latest.values().any(|(s, ..)| *s == "APPROVED") && !latest.values().any(|(s, ..)| *s == "CHANGES_REQUESTED")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::github::ReviewInfo;

    const REPO: &str = "GaloyMoney/lana-bank";

    fn check(arg: Option<&str>, expect: Result<Target, &str>) {
        match (parse(arg, REPO), expect) {
            (Ok(t), Ok(e)) => assert_eq!(t, e, "{arg:?}"),
            (Err(e), Err(needle)) => assert!(e.to_string().contains(needle), "{arg:?}: {e}"),
            (got, want) => panic!("{arg:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn targets() {
        let sha = "3f2a1bc9d0e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8";
        check(None, Ok(Target::Head));
        check(Some(sha), Ok(Target::Sha(sha.into())));
        check(Some("3F2A1BC"), Ok(Target::Sha("3f2a1bc".into())));
        check(Some("4242"), Ok(Target::Pull(4242)));
        check(Some("#17"), Ok(Target::Pull(17)));
        check(Some("1234567"), Ok(Target::Sha("1234567".into())));
        check(Some("https://github.com/GaloyMoney/lana-bank/pull/4242"), Ok(Target::Pull(4242)));
        check(Some("https://github.com/galoymoney/lana-bank/pull/4242/files#diff"), Ok(Target::Pull(4242)));
        check(Some(&format!("https://github.com/GaloyMoney/lana-bank/commit/{sha}")), Ok(Target::Sha(sha.into())));
        check(Some("https://github.com/other/repo/pull/1"), Err("not of the tracked GaloyMoney/lana-bank"));
        check(Some("https://github.com/GaloyMoney/lana-bank/issues/3"), Err("expected https://github.com"));
        check(Some("abc"), Err("at least 4 hex digits"));
        check(Some("main"), Err("expected a commit sha"));
        check(Some("#0"), Err("expected #NUMBER"));
        check(Some(""), Err("empty"));
        check(Some(&"a".repeat(41)), Err("expected a commit sha"));
    }

    fn r(user: &str, state: &str, at: i64) -> ReviewInfo {
        ReviewInfo { user: Some(user.into()), state: state.into(), submitted_at: Some(at), commit_id: None }
    }

    #[test]
    fn approval_follows_each_reviewers_latest_decision() {
        assert!(!approved(&[]));
        assert!(!approved(&[r("carol", "COMMENTED", 1)]));
        assert!(approved(&[r("carol", "APPROVED", 1)]));
        // A later comment does not withdraw an approval.
        assert!(approved(&[r("carol", "APPROVED", 1), r("carol", "COMMENTED", 2)]));
        // Another reviewer's requested changes block it.
        assert!(!approved(&[r("carol", "APPROVED", 1), r("dan", "CHANGES_REQUESTED", 2)]));
        // ... until that reviewer approves.
        assert!(approved(&[r("carol", "APPROVED", 1), r("dan", "CHANGES_REQUESTED", 2), r("dan", "APPROVED", 3)]));
        // A dismissed approval no longer counts.
        assert!(!approved(&[r("carol", "APPROVED", 1), r("carol", "DISMISSED", 2)]));
    }
}
