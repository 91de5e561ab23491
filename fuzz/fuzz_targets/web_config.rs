//! Web config parsing (TLS, basic auth, headers): any text gives a configuration or an error
//! naming the file, never a panic. Files it names are looked up in a directory that does not
//! exist, so only the parsing and validation run.
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| {
    let dir = std::path::Path::new("/nonexistent-deploy-journey-fuzz");
    if let Err(e) = deploy_journey::webconfig::parse(text, "web.yml", dir) {
        assert!(e.to_string().starts_with("web config web.yml"), "{e}");
    }
});
