//! Concourse answers (jobs, builds, build resources, versions, token, config, event stream) as
//! the client decodes them: any bytes give data or a decode error, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|body: &[u8]| {
    let _ = deploy_journey::sources::concourse::decode_answers(body);
});
