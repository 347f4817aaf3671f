//! The OpenAPI document at `GET /v1/openapi.json` describes every route the
//! router serves, and every route it describes is served.

mod common;

use common::{TestServer, http};
use serde_json::Value;

/// The endpoints the API promises (from the issues), method and path.
const PROMISED: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/v1/auth/login"),
    ("get", "/v1/auth/callback"),
    ("post", "/v1/auth/token"),
    ("post", "/v1/auth/refresh"),
    ("post", "/v1/auth/logout"),
    ("post", "/v1/auth/dev-login"),
    ("get", "/v1/auth/methods"),
    ("get", "/v1/me"),
    ("get", "/v1/users"),
    ("get", "/v1/friends"),
    ("delete", "/v1/friends/{user_id}"),
    ("get", "/v1/friends/requests"),
    ("post", "/v1/friends/requests"),
    ("post", "/v1/friends/requests/{user_id}/accept"),
    ("post", "/v1/friends/requests/{user_id}/decline"),
    ("delete", "/v1/friends/requests/{user_id}"),
    ("get", "/v1/blocks"),
    ("post", "/v1/blocks"),
    ("delete", "/v1/blocks/{user_id}"),
    ("post", "/v1/messages"),
    ("delete", "/v1/messages/{id}"),
    ("get", "/v1/conversations"),
    ("get", "/v1/conversations/{id}/messages"),
    ("post", "/v1/conversations/{id}/read"),
    ("get", "/v1/groups"),
    ("post", "/v1/groups"),
    ("get", "/v1/groups/{id}"),
    ("patch", "/v1/groups/{id}"),
    ("get", "/v1/groups/{id}/members"),
    ("post", "/v1/groups/{id}/members"),
    ("delete", "/v1/groups/{id}/members/{user_id}"),
    ("post", "/v1/groups/{id}/leave"),
    ("post", "/v1/calls"),
    ("post", "/v1/calls/{id}/accept"),
    ("post", "/v1/calls/{id}/reject"),
    ("post", "/v1/calls/{id}/cancel"),
    ("post", "/v1/calls/{id}/hangup"),
    ("post", "/v1/calls/{id}/connected"),
    ("get", "/v1/calls/active"),
    ("get", "/v1/calls/history"),
    ("get", "/v1/ice-servers"),
    ("get", "/v1/admin/ice/stun"),
    ("post", "/v1/admin/ice/stun"),
    ("delete", "/v1/admin/ice/stun"),
    ("get", "/v1/admin/ice/status"),
    ("post", "/v1/ws/ticket"),
    ("get", "/v1/ws"),
    ("get", "/v1/openapi.json"),
];

fn fill(path: &str) -> String {
    let id = "0195f1c2-7a6b-7d3e-9a41-2f5c8e1b7a90";
    let conversation_paths = path.starts_with("/v1/conversations/");
    path.replace(
        "{id}",
        if conversation_paths {
            "g:0195f1c2-7a6b-7d3e-9a41-2f5c8e1b7a90"
        } else {
            id
        },
    )
    .replace("{user_id}", id)
}

#[tokio::test]
async fn the_document_and_the_router_agree() {
    let server = TestServer::start(|_| {}).await;
    let response = http()
        .get(server.url("/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let document: Value = response.json().await.unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let paths = document["paths"].as_object().unwrap();

    let mut documented = Vec::new();
    for (path, item) in paths {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                documented.push((method.to_string(), path.clone()));
            }
        }
    }
    for (method, path) in PROMISED {
        assert!(
            documented.iter().any(|(m, p)| m == method && p == path),
            "{method} {path} is not in the OpenAPI document"
        );
    }
    assert!(document["components"]["securitySchemes"]["bearer"].is_object());

    // Every documented operation is served by a handler, not by the
    // router's fallbacks (which answer "no such route" or 405).
    let client = http();
    for (method, path) in &documented {
        let url = server.url(&fill(path));
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let response = client.request(method.clone(), &url).send().await.unwrap();
        let status = response.status().as_u16();
        assert_ne!(status, 405, "{method} {path} is documented but not routed");
        let body = response.text().await.unwrap();
        assert!(
            !body.contains("no such route"),
            "{method} {path} is documented but not routed"
        );
    }
    assert_eq!(
        documented.len(),
        PROMISED.len(),
        "undocumented promises or unpromised routes: {documented:?}"
    );
}
