//! The admin web UI: one HTML, one JS and one CSS file compiled into the binary, so
//! `hearth serve` ships it with no build step and nothing to install beside the binary.
//!
//! The page itself is public (it holds no data); it asks for an API key and calls `/v1`
//! like any other client. Everything it shows comes from a sandbox host, where VM
//! metadata and job output are attacker-controlled, so the JS only ever writes data with
//! `textContent`, and the CSP below forbids inline and foreign scripts as a second wall.

use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
/// A flame; also stops browsers from asking for `/favicon.ico`.
const ICON_SVG: &str = concat!(
    r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">"#,
    r##"<path fill="#b4451f" d="M8 1c1 3 5 5 5 9a5 5 0 0 1-10 0c0-2 1-3 2-4 0 2 1 3 2 3-1-3 0-6 1-8z"/>"##,
    "</svg>"
);

/// Same-origin only; no inline script or style, no plugins, no framing (clickjacking on
/// the revoke and delete buttons), no `<base>` tricks, no form posts anywhere.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// Routes outside `/v1`: not part of the API, so not in `/openapi.json`. Stateless, so
/// generic over the state (the unit tests below run them without an [`AppState`]).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route("/ui/", get(|| async { Redirect::to("/ui") }))
        .route(
            "/ui",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route(
            "/ui/icon.svg",
            get(|| async { asset("image/svg+xml", ICON_SVG) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            // Assets change with the binary; revalidating is cheap on loopback or a LAN.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get_path(path: &str) -> Response {
        let req = Request::get(path).body(Body::empty()).unwrap();
        routes::<()>().oneshot(req).await.unwrap()
    }

    #[tokio::test]
    async fn assets_are_served_with_their_type_and_a_strict_csp() {
        for (path, ctype, needle) in [
            (
                "/ui",
                "text/html; charset=utf-8",
                "<title>Hearth admin</title>",
            ),
            (
                "/ui/app.js",
                "text/javascript; charset=utf-8",
                "'use strict'",
            ),
            ("/ui/app.css", "text/css; charset=utf-8", ":root"),
            ("/ui/icon.svg", "image/svg+xml", "<svg"),
        ] {
            let resp = get_path(path).await;
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            let h = resp.headers().clone();
            assert_eq!(h[header::CONTENT_TYPE], ctype, "{path}");
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
            let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(csp.starts_with("default-src 'self';"), "{path}: {csp}");
            assert!(!csp.contains("unsafe"), "{path}: {csp}");
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert!(String::from_utf8_lossy(&body).contains(needle), "{path}");
        }
    }

    #[tokio::test]
    async fn root_and_trailing_slash_redirect_to_the_ui() {
        for path in ["/", "/ui/"] {
            let resp = get_path(path).await;
            assert!(resp.status().is_redirection(), "{path}: {}", resp.status());
            assert_eq!(resp.headers()[header::LOCATION], "/ui", "{path}");
        }
    }

    #[test]
    fn assets_reference_only_their_own_files() {
        // The CSP blocks inline code, so the page must not rely on any.
        assert!(!INDEX_HTML.contains("<script>"));
        assert!(!INDEX_HTML.contains("style="));
        let handler = |w: &str| w.starts_with("on") && w.contains('=');
        assert!(!INDEX_HTML.split_whitespace().any(handler));
        assert!(INDEX_HTML.contains(r#"<script src="/ui/app.js""#));
        assert!(INDEX_HTML.contains(r#"href="/ui/app.css""#));
        // Data is written with textContent; markup from strings would bypass that.
        assert!(!APP_JS.contains("innerHTML"));
        assert!(!APP_JS.contains("insertAdjacentHTML"));
        assert!(!APP_JS.contains("outerHTML"));
    }
}
