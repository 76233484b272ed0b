//! Server configuration: a TOML file layer and `AGENTKEYS_*` variables (after a line `---`),
//! resolved; what resolves shows, and resolves the same again.
#![no_main]

use agentkeys_gateway::config::{Config, Layer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (toml_text, env_text) = text.split_once("\n---\n").unwrap_or((text, ""));
    let Ok(file) = Layer::from_toml_str(toml_text) else {
        return;
    };
    let vars = env_text
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()));
    let Ok(env) = Layer::from_env(vars) else {
        return;
    };
    if let Ok(config) = Config::resolve(&file, &env, &Layer::default()) {
        let again = Config::resolve(&file, &env, &Layer::default()).expect("resolves again");
        assert_eq!(config.show(), again.show());
        let _ = config.show_json();
    }
});
