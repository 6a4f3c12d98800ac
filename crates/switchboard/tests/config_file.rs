//! The binary with a policy file: `check-config` says whether it is
//! usable, a bad one stops `serve` with exit code 64 naming the file, line
//! and field, and a node shows its namespaces in `GET /api/config`.

mod common;

use std::process::Command;

use serde_json::Value;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/switchboard.toml");

fn switchboard(args: &[&str], config_file: Option<&str>) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", "sqlite::memory:");
    if let Some(file) = config_file {
        command.env("CONFIG_FILE", file);
    }
    command.output().expect("the binary runs")
}

#[test]
fn check_config_accepts_the_example_and_refuses_a_bad_file_with_64() {
    let ok = switchboard(&["check-config", EXAMPLE], None);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("ok: 3 namespaces"));
    let ok = switchboard(&["check-config"], Some(EXAMPLE));
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");

    let dir = std::env::temp_dir().join(format!("sb-check-{}", common::unique("cfg")));
    std::fs::create_dir_all(&dir).unwrap();
    for (text, wants) in [
        ("[namespaces.a]\npublish = \"all\"\n", ":2: `publish`"),
        ("[default]\nhistory = 100000\n", ":2: `history`"),
        ("[namespaces.a]\n[namespaces.a.deep]\n", "unknown field"),
        ("[default\n", ":1"),
    ] {
        let file = dir.join("bad.toml");
        std::fs::write(&file, text).unwrap();
        let file = file.to_str().unwrap();
        for run in [
            switchboard(&["check-config", file], None),
            switchboard(&["serve"], Some(file)),
        ] {
            let stderr = String::from_utf8_lossy(&run.stderr);
            assert_eq!(run.status.code(), Some(64), "{text:?}: {stderr}");
            assert!(stderr.contains("invalid CONFIG_FILE"), "{stderr}");
            assert!(stderr.contains(file), "names the file: {stderr}");
            assert!(stderr.contains(wants), "{text:?}: {stderr}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_node_shows_its_namespaces_in_api_config() {
    let policies = switchboard_gateway::Policies::parse(
        "t.toml",
        &std::fs::read_to_string(EXAMPLE).unwrap(),
        switchboard_gateway::GatewayConfig::default().policy_bounds(),
    )
    .unwrap();
    let gateway = switchboard_gateway::GatewayConfig {
        policies: Some(policies),
        ..Default::default()
    };
    let node = common::Node::start("sqlite::memory:", gateway).await;
    let config: Value = reqwest::get(node.http("/api/config"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ns = &config["policies"]["namespaces"];
    assert_eq!(ns["typing"]["store"], false);
    assert_eq!(ns["news"]["publish"], "server");
    assert_eq!(ns["support"]["join"], "granted");
    assert_eq!(config["policies"]["default"]["history"], 50);
    node.stop().await;
}
