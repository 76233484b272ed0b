use super::*;

fn env(pairs: &[(&str, &str)]) -> Layer {
    Layer::from_env(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).expect("known vars")
}

#[test]
fn defaults_resolve() {
    let c = Config::resolve(&Layer::default(), &Layer::default(), &Layer::default())
        .expect("defaults are valid");
    assert_eq!(c.siwe_chains, vec![1]);
    assert_eq!(c.limits, Limits::default());
    assert_eq!(c.limits.session_ttl_seconds, 900);
    assert_eq!(c.limits.dpop_skew_seconds, 60);
    assert!(
        c.limits.binding_rate_per_second >= 10_000,
        "the benchmark's rate is never throttled"
    );
    assert!(!c.oidc_legacy_claims);
}

#[test]
fn defaults_then_file_then_env_then_flags() {
    let file = Layer::from_toml_str(
        "listen = \"127.0.0.1:1000\"\nclient_id = \"fromfile\"\ndata_dir = \"/srv/ak\"",
    )
    .expect("toml");
    let env = env(&[
        ("AGENTKEYS_LISTEN", "127.0.0.1:2000"),
        ("PATH", "/bin"),
        ("AGENTKEYS_PROFILE", "p"),
    ]);
    let flags = Layer::default().with("listen", "127.0.0.1:3000");
    let c = Config::resolve(&file, &env, &flags).expect("valid");
    assert_eq!(c.listen.port(), 3000);
    assert_eq!(c.sources["listen"].1, Source::Flag);
    assert_eq!(c.client_id, "fromfile");
    assert_eq!(c.sources["client_id"].1, Source::File);
    assert_eq!(c.public_url, "http://127.0.0.1:8090");
    assert_eq!(c.sources["public_url"].1, Source::Default);
    assert!(c.dev_mode);
    assert_eq!(c.k3_file, PathBuf::from("/srv/ak/keys/k3.key"));
    let shown = c.show();
    assert!(
        shown.contains("listen = \"127.0.0.1:3000\"  # flag"),
        "{shown}"
    );
    assert!(
        shown.contains("client_id = \"fromfile\"  # file"),
        "{shown}"
    );
    assert_eq!(c.show_json()["data_dir"]["source"], "file");
}

#[test]
fn toml_values_are_typed() {
    // The line docs/aws.md and docs/migration.md tell operators to write.
    let file = Layer::from_toml_str(
        "oidc_legacy_claims = true\nsiwe_chains = [1, 84532]\nsession_ttl_seconds = \"30m\"\n\
         dpop_skew_seconds = 30\ntrusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1\"]",
    )
    .expect("typed toml");
    let c = Config::resolve(&file, &Layer::default(), &Layer::default()).expect("valid");
    assert!(c.oidc_legacy_claims);
    assert_eq!(c.siwe_chains, vec![1, 84532]);
    assert_eq!(c.limits.session_ttl_seconds, 1800);
    assert_eq!(c.limits.dpop_skew_seconds, 30);
    assert_eq!(c.trusted_proxies.len(), 2);

    for (text, key) in [
        ("oidc_legacy_claims = \"yes\"", "oidc_legacy_claims"),
        ("listen = 8090", "listen"),
        ("binding_rate_per_second = -1", "binding_rate_per_second"),
        ("siwe_chains = [true]", "siwe_chains"),
    ] {
        let err = Layer::from_toml_str(text).expect_err(text);
        assert!(
            format!("{err:#}").contains(&format!("{key} (file) must be")),
            "{err:#}"
        );
    }
    let err = Layer::from_toml_str("k3_fil = \"/x\"").expect_err("unknown key");
    assert!(
        format!("{err:#}").contains("unknown key \"k3_fil\""),
        "{err:#}"
    );
}

#[test]
fn env_and_set_flags_share_the_table() {
    let env = env(&[
        ("AGENTKEYS_SIWE_CHAINS", "1, 84532"),
        ("AGENTKEYS_OIDC_LEGACY_CLAIMS", "true"),
        // Read by the CLI (`aws credentials`), not by the server: not an error.
        ("AGENTKEYS_STS_ENDPOINT", "http://127.0.0.1:5000"),
    ]);
    let args = crate::cli::ConfigArgs {
        set: vec![
            "binding_rate_per_second=50".into(),
            "dpop_skew_seconds=2m".into(),
        ],
        ..Default::default()
    };
    let flags = flag_layer(&args).expect("flags");
    let c = Config::resolve(&Layer::default(), &env, &flags).expect("valid");
    assert_eq!(c.siwe_chains, vec![1, 84532]);
    assert!(c.oidc_legacy_claims);
    assert_eq!(c.limits.binding_rate_per_second, 50);
    assert_eq!(c.limits.dpop_skew_seconds, 120);
    assert_eq!(c.sources["binding_rate_per_second"].1, Source::Flag);

    let bad = crate::cli::ConfigArgs {
        set: vec!["no_such_key=1".into()],
        ..Default::default()
    };
    let err = flag_layer(&bad).expect_err("unknown key");
    assert!(format!("{err:#}").contains("no_such_key"), "{err:#}");
}

#[test]
fn unknown_variables_are_errors_and_never_land_in_another_key() {
    let err = Layer::from_env([("AGENTKEYS_LISTN".to_string(), "x".to_string())])
        .expect_err("unknown var");
    assert!(err.to_string().contains("AGENTKEYS_LISTN"), "{err}");
    let mut layer = Layer::default();
    assert!(layer.set("nonsense", "/etc/passwd".into()).is_err());
    assert_eq!(layer.get("k3_file"), None);
}

#[test]
fn bad_values_name_the_key_and_source() {
    let flags = Layer::default().with("public_url", "ftp://x");
    let err = Config::resolve(&Layer::default(), &Layer::default(), &flags).expect_err("bad url");
    assert!(format!("{err:#}").contains("public_url (flag)"), "{err:#}");
    let bad_listen = env(&[("AGENTKEYS_LISTEN", "nowhere")]);
    let err =
        Config::resolve(&Layer::default(), &bad_listen, &Layer::default()).expect_err("bad listen");
    assert!(format!("{err:#}").contains("listen (env)"), "{err:#}");
    let file = Layer::from_toml_str("client_id = \"a b\"").expect("toml");
    let err = Config::resolve(&file, &Layer::default(), &Layer::default()).expect_err("bad id");
    assert!(format!("{err:#}").contains("client_id (file)"), "{err:#}");
    let env2 = env(&[("AGENTKEYS_SIWE_CHAINS", "mainnet")]);
    let err = Config::resolve(&Layer::default(), &env2, &Layer::default()).expect_err("chains");
    assert!(format!("{err:#}").contains("siwe_chains (env)"), "{err:#}");
    let env3 = env(&[("AGENTKEYS_SESSION_TTL_SECONDS", "5")]);
    let err = Config::resolve(&Layer::default(), &env3, &Layer::default()).expect_err("ttl");
    assert!(
        format!("{err:#}").contains("session_ttl_seconds (env) must be between"),
        "{err:#}"
    );
    let flags = Layer::default().with("public_url", "https://keys.example.com/");
    let c = Config::resolve(&Layer::default(), &Layer::default(), &flags).expect("valid");
    assert_eq!(
        (c.public_url.as_str(), c.domain.as_str(), c.dev_mode),
        ("https://keys.example.com", "keys.example.com", false)
    );
}

#[test]
fn durations_take_units() {
    assert_eq!(parse_seconds("90"), Some(90));
    assert_eq!(parse_seconds("90s"), Some(90));
    assert_eq!(parse_seconds("15m"), Some(900));
    assert_eq!(parse_seconds("1h"), Some(3600));
    assert_eq!(parse_seconds("30d"), Some(2_592_000));
    assert_eq!(parse_seconds("1w"), None);
    assert_eq!(parse_seconds("-1"), None);
    assert_eq!(parse_seconds(""), None);
    assert_eq!(parse_seconds("99999999999999999999d"), None);
}
