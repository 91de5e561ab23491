//! Removing credentials from text an upstream sent back (error bodies that echo the request).
//!
//! A server that echoes what it was sent shows a secret in whatever encoding it travelled or
//! was logged in: raw (`Authorization: Bearer …`), form or URL encoded (`S3cr3t%2Bp%40ss`),
//! JSON-escaped (`p\u0026ss`, `a\/b`), HTML-escaped (`&amp;`), or base64 (`Basic dXNlcjpw…`,
//! at any alignment inside a longer blob). And an excerpt may be cut anywhere, so any
//! 12-character piece of a secret counts as the secret.
//!
//! So the text is searched for every 12-character piece (the whole secret when shorter) in
//! several decoded views of it, each remembering which bytes of the original produced each
//! decoded byte: the text itself; percent/`+`/JSON/HTML-unescaped (once and twice); and every
//! base64-looking run decoded at each of its four alignments. Whatever produced a match is
//! replaced by `***` in the original (a whole base64 run when it decodes to a match).
//!
//! Known secrets are not the only ones an answer can carry: a token grant's answer holds a
//! token nobody configured. So every text is also scrubbed of anything shaped like a
//! credential ([`scrub_shapes`]): JWTs, GitHub tokens, `Authorization`/`Bearer`/`Basic`
//! values, and the values of JSON and form fields named like a credential, each also when
//! cut off mid-value.

use std::sync::LazyLock;

use aho_corasick::AhoCorasick;
use regex::Regex;

/// Pieces this long of a secret are recognisable; shorter ones are left (they also occur by
/// chance in ordinary text).
pub const PIECE: usize = 12;
/// Secrets shorter than this are not searched for (they would match ordinary words).
const MIN_SECRET: usize = 4;
/// Base64 runs shorter than this decode to fewer than the shortest secret searched for.
const MIN_RUN: usize = 8;

/// `text` with every recognisable encoding of each secret, and anything shaped like a
/// credential, replaced by `***`.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    scrub_shapes(&redact_known(text, secrets))
}

/// A field name that says its value is a credential: `access_token`, `id_token`,
/// `refresh_token`, `token`, `password`, `client_secret`, `api_key`, `authorization`, … (any
/// case).
const CREDENTIAL_KEY: &str =
    r"[A-Za-z0-9_.-]*(?:token|password|passwd|secret|api[_-]?key|authorization|cookie|credentials?)";

/// Credential shapes, each with what replaces a match (`$k` keeps the field name).
static SHAPES: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    let re = |s: &str| Regex::new(s).expect("credential pattern");
    vec![
        // JSON fields, also JSON inside a JSON string (`\"token\":\"…`); the value ends at its
        // closing quote or wherever the text was cut. An escaped quote is taken as part of the
        // value (so JSON inside a string loses the rest of that string: more, never less).
        (re(&format!(r#"(?i)(?P<k>\\?"{CREDENTIAL_KEY}\\?"\s*:\s*\\?")(?:[^"\\]|\\.)*"#)), "${k}***"),
        // Form and query fields (`password=…&`), HTTP header style `Authorization: <scheme> <value>`.
        (re(&format!(r#"(?i)(?P<k>\b{CREDENTIAL_KEY}=)[^&\s"'<>]+"#)), "${k}***"),
        (
            re(r#"(?i)(?P<k>\b(?:proxy-)?authorization\s*[:=]\s*(?:(?:bearer|basic|token|digest)\s+)?)[^\s,;"'<>]+"#),
            "${k}***",
        ),
        (re(r"(?i)(?P<k>\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]{8,}"), "${k}***"),
        // JWTs (a JSON header, base64url: always `eyJ`), whole or cut after any part.
        (re(r"eyJ[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]*){0,2}"), "***"),
        // GitHub tokens by their documented prefixes, cut or whole.
        (re(r"\b(?:gh[pousr]_[A-Za-z0-9]*|github_pat_[A-Za-z0-9_]*)"), "***"),
    ]
});

/// `text` with anything shaped like a credential replaced by `***` (see the module comment).
pub fn scrub_shapes(text: &str) -> String {
    let mut out = text.to_string();
    for (re, with) in SHAPES.iter() {
        if re.is_match(&out) {
            out = re.replace_all(&out, *with).into_owned();
        }
    }
    out
}

/// `text` with every recognisable encoding of each of `secrets` replaced by `***`.
fn redact_known(text: &str, secrets: &[&str]) -> String {
    let patterns = pieces(secrets);
    if patterns.is_empty() || text.is_empty() {
        return text.to_string();
    }
    let Ok(ac) = AhoCorasick::new(&patterns) else { return text.to_string() };
    let src = text.as_bytes();
    let mut marked = vec![false; src.len()];
    let identity = View { bytes: src.to_vec(), map: (0..src.len()).map(|i| (i, i + 1)).collect() };
    let decoded = unescape(&identity, true);
    let decoded_keep_plus = unescape(&identity, false);
    let twice = unescape(&decoded_keep_plus, true);
    for view in [&identity, &decoded, &decoded_keep_plus, &twice] {
        view.mark_matches(&ac, &mut marked);
    }
    for view in [&identity, &decoded_keep_plus, &twice] {
        view.mark_base64(&ac, &mut marked);
    }
    if !marked.contains(&true) {
        return text.to_string();
    }
    let mut out = Vec::with_capacity(src.len());
    let mut i = 0;
    while i < src.len() {
        if marked[i] {
            out.extend_from_slice(b"***");
            while i < src.len() && marked[i] {
                i += 1;
            }
        } else {
            out.push(src[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every `PIECE`-character window of each secret (the secret itself when shorter).
fn pieces(secrets: &[&str]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = vec![];
    for s in secrets {
        let chars: Vec<(usize, char)> = s.char_indices().collect();
        if chars.len() < MIN_SECRET {
            continue;
        }
        if chars.len() <= PIECE {
            out.push(s.as_bytes().to_vec());
            continue;
        }
        for w in 0..=chars.len() - PIECE {
            let start = chars[w].0;
            let end = chars.get(w + PIECE).map(|c| c.0).unwrap_or(s.len());
            out.push(s.as_bytes()[start..end].to_vec());
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Bytes decoded from the original text, each with the original byte range it came from.
struct View {
    bytes: Vec<u8>,
    map: Vec<(usize, usize)>,
}

impl View {
    fn span(&self, start: usize, end: usize) -> (usize, usize) {
        (self.map[start].0, self.map[end - 1].1)
    }

    fn mark(&self, start: usize, end: usize, marked: &mut [bool]) {
        let (a, b) = self.span(start, end);
        marked[a..b].iter_mut().for_each(|m| *m = true);
    }

    fn mark_matches(&self, ac: &AhoCorasick, marked: &mut [bool]) {
        for m in ac.find_overlapping_iter(&self.bytes) {
            self.mark(m.start(), m.end(), marked);
        }
    }

    /// Runs of base64 characters (either alphabet), decoded at each of the four alignments: a
    /// secret encoded anywhere inside decodes exactly at one of them.
    fn mark_base64(&self, ac: &AhoCorasick, marked: &mut [bool]) {
        let b = &self.bytes;
        let mut i = 0;
        while i < b.len() {
            if sextet(b[i]).is_none() {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && sextet(b[i]).is_some() {
                i += 1;
            }
            // Padding ends a run (`t=` before a blob is not part of it).
            while i < b.len() && b[i] == b'=' {
                i += 1;
            }
            if i - start < MIN_RUN {
                continue;
            }
            let run = &b[start..i];
            let hit = (0..4).any(|off| run.len() > off && ac.is_match(&decode_base64(&run[off..])));
            if hit {
                self.mark(start, i, marked);
            }
        }
    }
}

fn sextet(c: u8) -> Option<u32> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' | b'-' => 62,
        b'/' | b'_' => 63,
        _ => return None,
    } as u32)
}

/// Whole groups of four, padding as zero bits; garbage in, garbage out (it is only searched).
fn decode_base64(run: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(run.len() / 4 * 3 + 3);
    for g in run.chunks(4) {
        let mut v = 0u32;
        for k in 0..4 {
            v = (v << 6) | g.get(k).and_then(|c| sextet(*c)).unwrap_or(0);
        }
        let n = match g.iter().filter(|c| sextet(**c).is_some()).count() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => 0,
        };
        out.extend_from_slice(&v.to_be_bytes()[1..1 + n]);
    }
    out
}

fn hex(c: u8) -> Option<u32> {
    (c as char).to_digit(16)
}

/// Percent escapes (`%2B`), `+` as a space when `plus_is_space` (forms), JSON escapes
/// (`\u0026`, `\/`, `\"`) and HTML character references (`&amp;`, `&#43;`, `&#x2B;`) decoded
/// in one pass.
fn unescape(v: &View, plus_is_space: bool) -> View {
    let b = &v.bytes;
    let mut out = View { bytes: Vec::with_capacity(b.len()), map: Vec::with_capacity(b.len()) };
    let push = |out: &mut View, bytes: &[u8], from: usize, to: usize| {
        let span = v.span(from, to);
        for x in bytes {
            out.bytes.push(*x);
            out.map.push(span);
        }
    };
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%'
            && let (Some(h), Some(l)) = (b.get(i + 1).and_then(|x| hex(*x)), b.get(i + 2).and_then(|x| hex(*x)))
        {
            push(&mut out, &[(h * 16 + l) as u8], i, i + 3);
            i += 3;
            continue;
        }
        if c == b'+' && plus_is_space {
            push(&mut out, b" ", i, i + 1);
            i += 1;
            continue;
        }
        if c == b'\\' && i + 1 < b.len() {
            let simple = match b[i + 1] {
                b'"' => Some(b'"'),
                b'\\' => Some(b'\\'),
                b'/' => Some(b'/'),
                b'n' => Some(b'\n'),
                b't' => Some(b'\t'),
                b'r' => Some(b'\r'),
                _ => None,
            };
            if let Some(x) = simple {
                push(&mut out, &[x], i, i + 2);
                i += 2;
                continue;
            }
            if b[i + 1] == b'u'
                && i + 6 <= b.len()
                && let Some(cp) = b[i + 2..i + 6].iter().try_fold(0u32, |acc, x| hex(*x).map(|d| acc * 16 + d))
            {
                let ch = char::from_u32(cp).unwrap_or('\u{fffd}');
                push(&mut out, ch.encode_utf8(&mut [0; 4]).as_bytes(), i, i + 6);
                i += 6;
                continue;
            }
        }
        if c == b'&'
            && let Some(len) = b[i + 1..b.len().min(i + 12)].iter().position(|x| *x == b';')
            && let Some(ch) = entity(&b[i + 1..i + 1 + len])
        {
            push(&mut out, ch.encode_utf8(&mut [0; 4]).as_bytes(), i, i + 2 + len);
            i += 2 + len;
            continue;
        }
        push(&mut out, &[c], i, i + 1);
        i += 1;
    }
    out
}

fn entity(name: &[u8]) -> Option<char> {
    let n = std::str::from_utf8(name).ok()?;
    let cp = match n {
        "amp" => '&' as u32,
        "lt" => '<' as u32,
        "gt" => '>' as u32,
        "quot" => '"' as u32,
        "apos" => '\'' as u32,
        _ => {
            let num = n.strip_prefix('#')?;
            match num.strip_prefix(['x', 'X']) {
                Some(h) => u32::from_str_radix(h, 16).ok()?,
                None => num.parse().ok()?,
            }
        }
    };
    char::from_u32(cp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    const PASSWORD: &str = "S3cr3t+p@ss/w+rd&zz";
    const TOKEN: &str = "ghp_16C7e42F292c6912E7710c838347Ae178B4a";

    fn check(input: &str, expect: &str) {
        assert_eq!(redact(input, &[PASSWORD, TOKEN]), expect, "input: {input}");
    }

    #[test]
    fn every_encoding_of_a_secret_is_replaced() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let b64url = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let cases: Vec<(String, &str)> = vec![
            (format!("bad password {PASSWORD}!"), "bad password ***!"),
            (format!("Authorization: Bearer {TOKEN}\n"), "Authorization: Bearer ***\n"),
            // Form encoding, as in the password grant's body, upper and lower case escapes.
            (
                "grant_type=password&password=S3cr3t%2Bp%40ss%2Fw%2Brd%26zz&scope=openid".into(),
                "grant_type=password&password=***&scope=openid",
            ),
            ("p=S3cr3t%2bp%40ss%2fw%2brd%26zz".into(), "p=***"),
            // URL path encoding (space as %20, + left alone) and double encoding.
            ("/x/S3cr3t+p%40ss%2Fw+rd%26zz/y".into(), "/x/***/y"),
            ("q=S3cr3t%252Bp%2540ss%252Fw%252Brd%2526zz".into(), "q=***"),
            // JSON-escaped, Go style and with escaped slashes; HTML-escaped.
            (r#"{"body":"password=S3cr3t+p@ss\/w+rd\u0026zz"}"#.into(), r#"{"body":"password=***"}"#),
            ("<p>S3cr3t&#43;p@ss/w+rd&amp;zz</p>".into(), "<p>***</p>"),
            // Base64: basic auth of user:password, the token, and inside a longer blob at each
            // alignment, in both alphabets.
            (format!("Basic {}", b64(&format!("deploy-journey:{PASSWORD}"))), "Basic ***"),
            (format!("t={} end", b64(TOKEN)), "t=*** end"),
            (format!("blob {}", b64(&format!("x{TOKEN}y"))), "blob ***"),
            (format!("blob {}", b64(&format!("xy{TOKEN}"))), "blob ***"),
            (format!("blob {}", b64url(&format!("..{PASSWORD}.."))), "blob ***"),
            // A 12-character piece, cut at either end.
            ("…p@ss/w+rd&zz\"}".into(), "…***\"}"),
            ("tok ghp_16C7e42F29…".into(), "tok ***…"),
            // Shorter pieces and look-alikes stay.
            ("p@ss/w+rd&z".into(), "p@ss/w+rd&z"),
            ("nothing secret here: dXNlcjpwYXNz".into(), "nothing secret here: dXNlcjpwYXNz"),
        ];
        for (input, expect) in &cases {
            check(input, expect);
        }
    }

    #[test]
    fn credential_shapes_are_replaced_without_knowing_the_secret() {
        fn check(input: &str, expect: &str) {
            assert_eq!(redact(input, &[]), expect, "input: {input}");
        }
        let jwt = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJlX2J5dGVz";
        // A token grant's answer, whole and cut mid-value (as a truncated answer is).
        check(
            &format!(r#"{{"access_token":"{jwt}","token_type":"bearer","expires_in":86399,"id_token":"{jwt}"}}"#),
            r#"{"access_token":"***","token_type":"bearer","expires_in":86399,"id_token":"***"}"#,
        );
        check(
            r#"{"access_token":"gAAAAxyz12","id_token":"eyJhbGciOiJSUzI1"#,
            r#"{"access_token":"***","id_token":"***"#,
        );
        check(
            r#"{"ACCESS_TOKEN" : "abc", "Refresh_Token":"r\"q", "n":1}"#,
            r#"{"ACCESS_TOKEN" : "***", "Refresh_Token":"***", "n":1}"#,
        );
        check(
            r#"{"password":"hunter2","client_secret":"s3","token":"t"}"#,
            r#"{"password":"***","client_secret":"***","token":"***"}"#,
        );
        check(
            r#"{"Authorization":"Bearer short","accessToken":"x","set-cookie":"s=1"}"#,
            r#"{"Authorization":"***","accessToken":"***","set-cookie":"***"}"#,
        );
        // JSON inside a JSON string.
        check(
            r#"{"body":"{\"access_token\":\"abcdef\",\"x\":1}","n":2}"#,
            r#"{"body":"{\"access_token\":\"***","n":2}"#,
        );
        // Form and query fields.
        check(
            "grant_type=password&username=u&password=p%40ss&scope=openid",
            "grant_type=password&username=u&password=***&scope=openid",
        );
        check("?access_token=abc&client_secret=def", "?access_token=***&client_secret=***");
        check("refresh_token=abc", "refresh_token=***");
        // Headers.
        check("Authorization: Bearer abc.def-ghi\n", "Authorization: Bearer ***\n");
        check("authorization=token ghp_x", "authorization=*** ***");
        check("Proxy-Authorization: Basic dXNlcjpwYXNz", "Proxy-Authorization: Basic ***");
        check("sent bearer 0123456789abcdef, ok", "sent bearer ***, ok");
        check("BASIC dXNlcjpwYXNzd29yZA==", "BASIC ***");
        // JWTs anywhere, cut after any part.
        check(&format!("token {jwt} end"), "token *** end");
        check("x eyJhbGciOiJIUzI1NiJ9.eyJzdWIi…", "x ***…");
        check("x eyJhbGc", "x ***");
        // GitHub tokens, whole or cut.
        check("ghp_16C7e42F292c6912E7710c838347Ae178B4a", "***");
        check("a gho_16C7 b ghs_ c ghu_x d ghr_y", "a *** b *** c *** d ***");
        check("github_pat_11ABCDEFG0_abcdefghij", "***");
        // Look-alikes stay.
        for same in [
            r#"{"token_type":"bearer","expires_in":86399}"#,
            "token answer without an access_token",
            "basic auth",
            "HTTP 401: Unauthorized",
            "eye, ghost_town, github_page",
            "no_token=",
        ] {
            check(same, same);
        }
    }

    #[test]
    fn short_secrets_and_empty_input() {
        assert_eq!(redact("a hunter2 b", &["hunter2"]), "a *** b");
        assert_eq!(redact("a abc b", &["abc"]), "a abc b", "too short to search for");
        assert_eq!(redact("", &[PASSWORD]), "");
        assert_eq!(redact("ünïcödé %zz \\u12 &#xZZ; &", &[PASSWORD]), "ünïcödé %zz \\u12 &#xZZ; &");
    }
}
