//! The delivery log page (`/ui/`): one file with its script and style inline, and the
//! Content-Security-Policy that lets exactly those run and nothing else: no outside source, no
//! framing, no form posted anywhere, calls only to the admin listener itself.

use base64::Engine;
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

pub const PAGE: &str = include_str!("ui.html");

/// The policy sent with the page, naming its inline script and style by their SHA-256.
pub static CONTENT_SECURITY_POLICY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        inline_hash("script"),
        inline_hash("style")
    )
});

/// `'sha256-…'` of the text inside the page's one `<tag>` element.
fn inline_hash(tag: &str) -> String {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let text = PAGE
        .split_once(&open)
        .and_then(|(_, rest)| rest.split_once(&close))
        .map_or("", |(inside, _)| inside);
    let digest = Sha256::digest(text.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_the_pages_script_and_style_and_nothing_else() {
        let csp = &*CONTENT_SECURITY_POLICY;
        assert!(csp.starts_with("default-src 'none'; script-src 'sha256-"));
        assert!(!csp.contains("unsafe"));
        // An empty element would hash to this: the page has both, so neither may be it.
        let empty = "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='";
        assert_eq!(csp.matches(empty).count(), 0, "{csp}");
        assert_eq!(PAGE.matches("<script>").count(), 1);
        assert_eq!(PAGE.matches("<style>").count(), 1);
    }
}
