//! Configuration parsing: any text gives a `Config` or an error listing problems (each with a
//! path and a message), never a panic. Every secret variable is "set", so validation runs past
//! the secret checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| {
    let env = |_: &str| Some("fuzz-secret".to_string());
    if let Err(e) = deploy_journey::config::parse(text, "fuzz.yaml", &env) {
        assert!(!e.problems.is_empty(), "an error names at least one problem");
        let _ = e.to_string();
    }
});
