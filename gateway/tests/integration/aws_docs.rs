//! The policy documents of docs/aws.md are valid JSON and name exactly the tags the code emits.

use serde_json::Value;

const TAGS: [&str; 3] = [
    "agentkeys_actor_omni",
    "agentkeys_master_omni",
    "agentkeys_user_wallet",
];

#[test]
fn the_policy_documents_parse_and_use_the_emitted_tag_names() {
    let trust: Value = serde_json::from_str(include_str!("../../../docs/aws/trust-policy.json"))
        .expect("trust-policy.json is JSON");
    let bucket: Value = serde_json::from_str(include_str!("../../../docs/aws/bucket-policy.json"))
        .expect("bucket-policy.json is JSON");
    let statement = &trust["Statement"][0];
    let actions: Vec<&str> = statement["Action"]
        .as_array()
        .expect("actions")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        actions.contains(&"sts:AssumeRoleWithWebIdentity") && actions.contains(&"sts:TagSession")
    );
    let condition = &statement["Condition"];
    assert!(
        condition["StringEquals"]
            .as_object()
            .expect("aud")
            .values()
            .any(|v| v == "sts.amazonaws.com")
    );
    assert!(
        condition["StringLike"]
            .as_object()
            .expect("sub")
            .values()
            .any(|v| v == "agentkeys:actor:*")
    );
    let keys: Vec<&str> = condition["ForAllValues:StringEquals"]["aws:TagKeys"]
        .as_array()
        .expect("tag keys")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(keys, TAGS);
    // The tag names are the code's own (see gateway/src/http/oidc.rs).
    let code = include_str!("../../src/http/oidc.rs");
    for tag in TAGS {
        assert!(code.contains(&format!("\"{tag}\"")), "{tag} is emitted");
    }
    let text = bucket.to_string();
    assert!(text.contains("${aws:PrincipalTag/agentkeys_actor_omni}"));
    assert_eq!(bucket["Version"], "2012-10-17");
}
