//! The log excerpt of a failed build, as a person should see it on a page: the last lines of
//! its event stream's log, with terminal escapes and control characters removed, credentials
//! redacted, and a size bound. Pure: the lines come from
//! [`ConcourseSource::build_log_tail`](super::ConcourseSource::build_log_tail).

use std::sync::OnceLock;

/// Lines kept (the end of the log is where a failure says why).
pub const EXCERPT_LINES: usize = 20;
/// Bytes kept at most; a longer excerpt keeps its end.
pub const EXCERPT_BYTES: usize = 4096;

/// ANSI/VT escape sequences: CSI (`ESC [ … final`), OSC (`ESC ] … BEL|ST`) and two-byte escapes.
fn escapes() -> &'static regex::Regex {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    RE.get_or_init(|| {
        regex::Regex::new(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
            .expect("a valid pattern")
    })
}

/// `lines` cleaned for a page: escapes and control characters (but tabs) gone, each carriage
/// return keeping what was drawn last on the line (progress bars), credentials `secrets` and
/// anything shaped like one redacted, at most [`EXCERPT_LINES`] lines and [`EXCERPT_BYTES`]
/// bytes, the end kept. Empty when nothing printable is left.
pub fn excerpt(lines: &[String], secrets: &[&str]) -> String {
    let cleaned: Vec<String> = lines
        .iter()
        .map(|l| {
            let l = escapes().replace_all(l, "");
            // A carriage return redraws the line: what follows the last one is what showed.
            let l = l.rsplit('\r').find(|s| !s.is_empty()).unwrap_or("");
            l.chars().filter(|c| *c == '\t' || !c.is_control()).collect::<String>().trim_end().to_string()
        })
        .collect();
    // Trailing blank lines say nothing.
    let end = cleaned.iter().rposition(|l| !l.is_empty()).map_or(0, |i| i + 1);
    let start = end.saturating_sub(EXCERPT_LINES);
    let text = cleaned[start..end].join("\n");
    let text = crate::sources::redact::redact(&text, secrets);
    if text.len() <= EXCERPT_BYTES {
        return text;
    }
    let mut cut = text.len() - EXCERPT_BYTES;
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    // Start at a whole line when one begins within the kept part.
    let rest = &text[cut..];
    rest.split_once('\n').map_or(rest, |(_, after)| after).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(lines: &[&str], secrets: &[&str], expect: &str) {
        let lines: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        assert_eq!(excerpt(&lines, secrets), expect);
    }

    #[test]
    fn cleans_what_a_terminal_would_have_drawn() {
        check(&["\x1b[31merror:\x1b[0m step failed", "  got: 503"], &[], "error: step failed\n  got: 503");
        // OSC hyperlinks and a title; a bell; a progress bar redrawn with carriage returns.
        check(
            &["\x1b]8;;https://x\x07link\x1b]8;;\x07 done\x07", "10%\r50%\r100% downloaded\r"],
            &[],
            "link done\n100% downloaded",
        );
        check(&["a\tb\x08c\x00"], &[], "a\tbc");
        check(&["", "  ", ""], &[], "");
        check(&["last line", "", ""], &[], "last line");
    }

    #[test]
    fn keeps_the_end() {
        let lines: Vec<String> = (0..50).map(|i| format!("line {i}")).collect();
        let text = excerpt(&lines, &[]);
        assert!(text.starts_with("line 30\n") && text.ends_with("line 49"), "{text}");
        let long: Vec<String> = (0..20).map(|i| format!("{i:03} {}", "é".repeat(300))).collect();
        let text = excerpt(&long, &[]);
        assert!(text.len() <= EXCERPT_BYTES && text.starts_with("01") && text.ends_with('é'), "{}", &text[..20]);
    }

    #[test]
    fn redacts_credentials() {
        check(
            &["login with hunter2-secret-pw", "Authorization: Bearer abc.def.ghi"],
            &["hunter2-secret-pw"],
            &crate::sources::redact::redact(
                "login with hunter2-secret-pw\nAuthorization: Bearer abc.def.ghi",
                &["hunter2-secret-pw"],
            ),
        );
        let text = excerpt(&["token ghp_0123456789abcdefghijABCDEFGHIJ0123456789".into()], &[]);
        assert!(!text.contains("ghp_0123456789"), "{text}");
        let text = excerpt(&["pw=hunter2-secret-pw".into()], &["hunter2-secret-pw"]);
        assert!(!text.contains("hunter2"), "{text}");
    }
}
