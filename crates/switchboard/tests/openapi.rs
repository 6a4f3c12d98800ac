//! `/api/openapi.json`: an OpenAPI 3.1 document of every server API route,
//! and every route it documents is served by that method (the property-
//! based run against it is schemathesis, in scripts/test).

mod common;

use common::Node;
use common::jwt::API_KEY;
use serde_json::Value;

#[tokio::test]
async fn the_document_lists_the_api_and_every_documented_route_is_served() {
    let node = Node::start("sqlite::memory:", common::jwt::api_config("n1")).await;
    let res = reqwest::get(node.http("/api/openapi.json")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    let doc: Value = res.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            operations.push((method.clone(), path.clone()));
        }
    }
    operations.sort();
    let expected = [
        ("delete", "/api/rooms/{room}/messages/{id}"),
        ("get", "/api/rooms"),
        ("get", "/api/rooms/{room}/messages"),
        ("get", "/api/rooms/{room}/presence"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("post", "/api/broadcast"),
        ("post", "/api/rooms/{room}/messages"),
        ("post", "/api/users/{name}/disconnect"),
    ];
    let got: Vec<(&str, &str)> = operations
        .iter()
        .map(|(m, p)| (m.as_str(), p.as_str()))
        .collect();
    assert_eq!(got, expected);
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
    for schema in [
        "Message",
        "ErrorBody",
        "SendBody",
        "BroadcastBody",
        "RoomsPage",
        "PresenceBody",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
    // Every documented operation exists: with the key and harmless
    // arguments, the answer is one the document lists for it, never the
    // router's 404 or 405.
    let client = reqwest::Client::new();
    for (method, path) in &operations {
        let url = node.http(
            &path
                .replace("{room}", "openapi-check")
                .replace("{id}", "01a2239b-37fb-7274-b586-ee0720925321")
                .replace("{name}", "nobody"),
        );
        let req = match method.as_str() {
            "get" => client.get(&url),
            "post" => client.post(&url).body("{}"),
            "delete" => client.delete(&url),
            other => panic!("{other}"),
        };
        let res = req.bearer_auth(API_KEY).send().await.unwrap();
        let status = res.status().as_u16().to_string();
        assert_ne!(res.status(), 405, "{method} {path}");
        assert!(
            paths[path][method]["responses"].get(&status).is_some(),
            "{method} {path} answered {status}, which the document does not list"
        );
        if status == "404" {
            let body: Value = res.json().await.unwrap();
            assert_ne!(body["message"], "no such route", "{method} {path}");
        }
    }
    node.stop().await;
}
