//! The operator console (docs/console.md): one HTML page at `/console` with its script and
//! style inline, embedded in the binary and allowed by their hashes in a strict CSP. It speaks
//! only the public API, from this origin only.

use std::sync::LazyLock;

use axum::response::Response;

use super::confirm::{csp_hash, hardened_html};

const HTML: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// The page and its CSP, built once.
static PAGE: LazyLock<(String, String)> = LazyLock::new(|| {
    let page = HTML
        .replace("/*STYLE*/", STYLE)
        .replace("/*SCRIPT*/", SCRIPT);
    let csp = format!(
        "default-src 'none'; script-src 'sha256-{}'; style-src 'sha256-{}'; connect-src 'self'; \
         img-src data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
        csp_hash(SCRIPT),
        csp_hash(STYLE)
    );
    (page, csp)
});

/// `GET /console`: the console page.
pub(super) async fn page() -> Response {
    let (page, csp) = &*PAGE;
    hardened_html(page.clone(), csp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_inlines_exactly_what_the_csp_allows() {
        let (page, csp) = &*PAGE;
        assert!(page.contains(&format!("<script type=\"module\">{SCRIPT}</script>")));
        assert!(page.contains(&format!("<style>{STYLE}</style>")));
        assert!(csp.contains(&format!("'sha256-{}'", csp_hash(SCRIPT))));
        assert!(csp.contains("frame-ancestors 'none'"));
        assert!(!csp.contains("unsafe"), "{csp}");
        // No handler attributes and no other origin in the assets.
        for asset in [HTML, SCRIPT, STYLE] {
            assert!(!asset.contains(" onclick=\""), "inline handler");
            assert!(
                !asset.contains("http://") && !asset.contains("https://"),
                "an absolute URL"
            );
        }
    }
}
