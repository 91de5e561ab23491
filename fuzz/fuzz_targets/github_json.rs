//! GitHub answers (commit lists, commit details, compare, pulls, reviews, merges, Link headers)
//! as the client decodes them: any bytes give data or a decode error, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|body: &[u8]| {
    let _ = deploy_journey::sources::github::decode_answers(body);
});
