//! The web client's files come from the binary itself, with a strict
//! content security policy, and the sign-in methods endpoint tells the page
//! which buttons to show. (The client's behaviour is tested in Chromium:
//! web-tests/.)

mod common;

use common::{TestServer, http};

#[tokio::test]
async fn the_web_client_is_served_from_the_binary() {
    let server = TestServer::start(|_| {}).await;
    let client = http();
    for (path, content_type, needle) in [
        ("/", "text/html", "<script type=\"module\" src=\"/app.js\">"),
        ("/app.js", "text/javascript", "new RTCPeerConnection"),
        ("/app.css", "text/css", "#call"),
    ] {
        let response = client.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with(content_type)
        );
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert!(response.text().await.unwrap().contains(needle), "{path}");
    }
    let methods: serde_json::Value = client
        .get(server.url("/v1/auth/methods"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        methods,
        serde_json::json!({"provider": false, "dev_login": true})
    );
    // Other paths are still the API's JSON 404.
    let missing = client.get(server.url("/nope.js")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(common::error_code(missing).await, "not_found");
    server.stop().await;
}
