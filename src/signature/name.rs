//! The schemes a route can name (PRODUCT.md §4), and what each one takes: the one list that the
//! config, the verifiers and `hookgate check`'s messages are built from.

use super::Provider;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemeName {
    Imggo,
    Hmac,
    Github,
    Shopify,
    Stripe,
    Slack,
    StandardWebhooks,
    Svix,
    Twilio,
    Discord,
    Sendgrid,
    Paddle,
    Square,
    Pagerduty,
    Linear,
    Gitlab,
    Zoom,
    Mailgun,
    Intercom,
    Typeform,
    Calendly,
    Terraform,
    Twitch,
}

impl SchemeName {
    pub const ALL: [SchemeName; 23] = [
        Self::Imggo,
        Self::Hmac,
        Self::Github,
        Self::Shopify,
        Self::Stripe,
        Self::Slack,
        Self::StandardWebhooks,
        Self::Svix,
        Self::Twilio,
        Self::Discord,
        Self::Sendgrid,
        Self::Paddle,
        Self::Square,
        Self::Pagerduty,
        Self::Linear,
        Self::Gitlab,
        Self::Zoom,
        Self::Mailgun,
        Self::Intercom,
        Self::Typeform,
        Self::Calendly,
        Self::Terraform,
        Self::Twitch,
    ];

    /// The name as written in a config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Imggo => "imggo",
            Self::Hmac => "hmac",
            Self::Github => "github",
            Self::Shopify => "shopify",
            Self::Stripe => "stripe",
            Self::Slack => "slack",
            Self::StandardWebhooks => "standard-webhooks",
            Self::Svix => "svix",
            Self::Twilio => "twilio",
            Self::Discord => "discord",
            Self::Sendgrid => "sendgrid",
            Self::Paddle => "paddle",
            Self::Square => "square",
            Self::Pagerduty => "pagerduty",
            Self::Linear => "linear",
            Self::Gitlab => "gitlab",
            Self::Zoom => "zoom",
            Self::Mailgun => "mailgun",
            Self::Intercom => "intercom",
            Self::Typeform => "typeform",
            Self::Calendly => "calendly",
            Self::Terraform => "terraform",
            Self::Twitch => "twitch",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The presets verified by [`super::ProviderScheme`].
    pub fn provider(self) -> Option<Provider> {
        Some(match self {
            Self::Pagerduty => Provider::PagerDuty,
            Self::Paddle => Provider::Paddle,
            Self::Calendly => Provider::Calendly,
            Self::Zoom => Provider::Zoom,
            Self::Twitch => Provider::Twitch,
            Self::Linear => Provider::Linear,
            Self::Square => Provider::Square,
            Self::Twilio => Provider::Twilio,
            Self::Mailgun => Provider::Mailgun,
            Self::Gitlab => Provider::GitLab,
            _ => return None,
        })
    }

    /// Whether the scheme signs a timestamp checked against `tolerance`.
    pub fn timestamped(self) -> bool {
        matches!(
            self,
            Self::Stripe | Self::Slack | Self::StandardWebhooks | Self::Svix
        ) || self.provider().is_some_and(Provider::timestamped)
    }

    /// Whether `header` may name the signature header.
    pub fn takes_header(self) -> bool {
        matches!(
            self,
            Self::Imggo | Self::Hmac | Self::Github | Self::Shopify
        )
    }

    /// Whether the provider sends a verification request the gateway can answer (`handshake`).
    pub fn has_handshake(self) -> bool {
        matches!(self, Self::Slack | Self::Discord)
            || self.provider().is_some_and(Provider::has_handshake)
    }

    /// Whether the scheme signs the URL it delivers to (`public_url` is required).
    pub fn signs_url(self) -> bool {
        self.provider().is_some_and(Provider::signs_url)
    }
}

impl std::fmt::Display for SchemeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_to_itself() {
        for name in SchemeName::ALL {
            assert_eq!(SchemeName::parse(name.as_str()), Some(name));
            assert_eq!(name.to_string(), name.as_str());
        }
        for name in SchemeName::ALL {
            if let Some(provider) = name.provider() {
                assert_eq!(provider.name(), name.as_str());
            }
        }
        assert_eq!(SchemeName::parse("md5"), None);
        assert_eq!(SchemeName::parse("Stripe"), None);
    }
}
