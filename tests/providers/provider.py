#!/usr/bin/env python3
"""Signs and verifies webhook deliveries with the providers' own client libraries, so hookgate's
schemes are checked against the real thing, not against hookgate's own code.

  provider.py sign   SCHEME SECRET BODY_FILE              -> "Name: value" header lines
  provider.py verify SCHEME SECRET BODY_FILE HEADERS_FILE  -> exit 0 if the library accepts
"""
import base64
import datetime
import hashlib
import hmac
import sys
import time
import uuid


def sign(scheme, secret, body):
    now = datetime.datetime.now(tz=datetime.timezone.utc)
    ts = str(int(now.timestamp()))
    text = body.decode()
    if scheme == "stripe":
        import stripe
        sig = stripe.WebhookSignature._compute_signature(f"{ts}.{text}", secret)
        return [("Stripe-Signature", f"t={ts},v1={sig}")]
    if scheme in ("standard-webhooks", "svix"):
        msg_id = f"msg_{uuid.uuid4().hex}"
        if scheme == "svix":
            from svix.webhooks import Webhook
            prefix = "svix"
        else:
            from standardwebhooks.webhooks import Webhook
            prefix = "webhook"
        sig = Webhook(secret).sign(msg_id, now, text)
        return [(f"{prefix}-id", msg_id), (f"{prefix}-timestamp", ts), (f"{prefix}-signature", sig)]
    if scheme == "slack":
        from slack_sdk.signature import SignatureVerifier
        sig = SignatureVerifier(secret).generate_signature(timestamp=ts, body=text)
        return [("X-Slack-Request-Timestamp", ts), ("X-Slack-Signature", sig)]
    # GitHub and Shopify publish no signing library; these are their documented recipes.
    digest = hmac.new(secret.encode(), body, hashlib.sha256)
    if scheme == "github":
        return [("X-Hub-Signature-256", "sha256=" + digest.hexdigest())]
    if scheme == "shopify":
        return [("X-Shopify-Hmac-Sha256", base64.b64encode(digest.digest()).decode())]
    raise SystemExit(f"unknown scheme {scheme}")


def verify(scheme, secret, body, headers):
    text = body.decode()
    h = {k.lower(): v for k, v in headers.items()}
    try:
        if scheme == "stripe":
            import stripe
            stripe.WebhookSignature.verify_header(text, h["stripe-signature"], secret, 300)
        elif scheme == "standard-webhooks":
            from standardwebhooks.webhooks import Webhook
            Webhook(secret).verify(text, h)
        elif scheme == "svix":
            from svix.webhooks import Webhook
            Webhook(secret).verify(text, h)
        elif scheme == "slack":
            from slack_sdk.signature import SignatureVerifier
            if not SignatureVerifier(secret).is_valid(text, h["x-slack-request-timestamp"], h["x-slack-signature"]):
                raise ValueError("slack signature invalid")
        else:
            raise SystemExit(f"no verifier library for {scheme}")
    except Exception as e:  # the libraries raise their own types
        print(f"rejected: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    mode, scheme, secret, body_file = sys.argv[1:5]
    body = open(body_file, "rb").read()
    if mode == "sign":
        for name, value in sign(scheme, secret, body):
            print(f"{name}: {value}")
    else:
        lines = open(sys.argv[5]).read().splitlines()
        headers = dict(line.split(": ", 1) for line in lines if ": " in line)
        sys.exit(verify(scheme, secret, body, headers))
