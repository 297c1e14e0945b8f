#!/usr/bin/env python3
"""Signs and verifies provider-preset deliveries the way each provider does, with the provider's
own library where one exists on PyPI (twilio, PyNaCl for Discord, sendgrid, paddle-python-sdk,
squareup) and Python's hmac module otherwise (independently of hookgate's code).

  presets.py sign SCHEME SECRET BODY_FILE [--url URL] [--at UNIX_SECONDS]   -> JSON headers
  presets.py verify SCHEME SECRET BODY_FILE HEADERS_JSON [--url URL]        -> true / false
  presets.py keys                                                          -> JSON key pairs
"""
import argparse
import base64
import hashlib
import hmac
import json
import sys
import time
import urllib.parse
import uuid
from datetime import datetime, timezone


def hexmac(secret, message, digest=hashlib.sha256):
    return hmac.new(secret.encode(), message, digest).hexdigest()


def b64mac(secret, message, digest=hashlib.sha256):
    return base64.b64encode(hmac.new(secret.encode(), message, digest).digest()).decode()


def sign(scheme, secret, body, url, at):
    ts = str(at)
    if scheme == "twilio":
        from twilio.request_validator import RequestValidator
        params = dict(urllib.parse.parse_qsl(body.decode(), keep_blank_values=True))
        return {"X-Twilio-Signature": RequestValidator(secret).compute_signature(url, params)}
    if scheme == "discord":
        from nacl.signing import SigningKey
        signed = SigningKey(bytes.fromhex(secret)).sign(ts.encode() + body)
        return {"X-Signature-Ed25519": signed.signature.hex(), "X-Signature-Timestamp": ts}
    if scheme == "sendgrid":
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        key = serialization.load_der_private_key(base64.b64decode(secret), password=None)
        sig = key.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(sig).decode(),
                "X-Twilio-Email-Event-Webhook-Timestamp": ts}
    if scheme == "paddle":
        return {"Paddle-Signature": f"ts={ts};h1={hexmac(secret, ts.encode() + b':' + body)}"}
    if scheme == "square":
        return {"x-square-hmacsha256-signature": b64mac(secret, url.encode() + body)}
    if scheme == "pagerduty":
        return {"X-PagerDuty-Signature": f"v1={hexmac(secret, body)}"}
    if scheme == "linear":
        return {"Linear-Signature": hexmac(secret, body)}
    if scheme == "gitlab":
        return {"X-Gitlab-Token": secret}
    if scheme == "zoom":
        return {"x-zm-request-timestamp": ts,
                "x-zm-signature": "v0=" + hexmac(secret, b"v0:" + ts.encode() + b":" + body)}
    if scheme == "intercom":
        return {"X-Hub-Signature": "sha1=" + hexmac(secret, body, hashlib.sha1)}
    if scheme == "typeform":
        return {"Typeform-Signature": "sha256=" + b64mac(secret, body)}
    if scheme == "calendly":
        return {"Calendly-Webhook-Signature": f"t={ts},v1={hexmac(secret, ts.encode() + b'.' + body)}"}
    if scheme == "terraform":
        return {"X-TFE-Notification-Signature": hexmac(secret, body, hashlib.sha512)}
    if scheme == "twitch":
        mid = str(uuid.uuid4())
        stamp = datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"
        return {"Twitch-Eventsub-Message-Id": mid, "Twitch-Eventsub-Message-Timestamp": stamp,
                "Twitch-Eventsub-Message-Type": "notification",
                "Twitch-Eventsub-Message-Signature": "sha256=" + hexmac(secret, mid.encode() + stamp.encode() + body)}
    if scheme == "slack":
        return {"X-Slack-Request-Timestamp": ts,
                "X-Slack-Signature": "v0=" + hexmac(secret, b"v0:" + ts.encode() + b":" + body)}
    raise SystemExit(f"no signer for {scheme}")


def verify(scheme, secret, body, headers, url):
    h = {k.lower(): v for k, v in headers.items()}
    if scheme == "twilio":
        from twilio.request_validator import RequestValidator
        params = dict(urllib.parse.parse_qsl(body.decode(), keep_blank_values=True))
        return RequestValidator(secret).validate(url, params, h["x-twilio-signature"])
    if scheme == "discord":
        from nacl.signing import VerifyKey
        try:
            VerifyKey(bytes.fromhex(secret)).verify(h["x-signature-timestamp"].encode() + body,
                                                    bytes.fromhex(h["x-signature-ed25519"]))
            return True
        except Exception:
            return False
    if scheme == "sendgrid":
        from sendgrid.helpers.eventwebhook import EventWebhook
        ew = EventWebhook()
        key = ew.convert_public_key_to_ecdsa(secret)
        return ew.verify_signature(body.decode(), h["x-twilio-email-event-webhook-signature"],
                                   h["x-twilio-email-event-webhook-timestamp"], key)
    if scheme == "paddle":
        from paddle_billing.Notifications import Secret, Verifier

        class Request:
            def __init__(self):
                self.body = body
                self.content = body
                self.data = body
                self.headers = {"Paddle-Signature": headers.get("Paddle-Signature") or h["paddle-signature"]}
        return Verifier().verify(Request(), Secret(secret))
    if scheme == "square":
        from square.utils.webhooks_helper import verify_signature
        return verify_signature(request_body=body.decode(), signature_header=h["x-square-hmacsha256-signature"],
                                signature_key=secret, notification_url=url)
    raise SystemExit(f"no provider library verifies {scheme}")


def keys():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from nacl.signing import SigningKey
    seed = SigningKey.generate()
    ec_key = ec.generate_private_key(ec.SECP256R1())
    return {
        "discord_private": bytes(seed).hex(),
        "discord_public": bytes(seed.verify_key).hex(),
        "sendgrid_private": base64.b64encode(ec_key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())).decode(),
        "sendgrid_public": base64.b64encode(ec_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode(),
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["sign", "verify", "keys"])
    p.add_argument("scheme", nargs="?")
    p.add_argument("secret", nargs="?")
    p.add_argument("body", nargs="?")
    p.add_argument("headers", nargs="?")
    p.add_argument("--url", default="")
    p.add_argument("--at", type=int, default=int(time.time()))
    a = p.parse_args()
    if a.command == "keys":
        print(json.dumps(keys()))
        return
    body = open(a.body, "rb").read()
    if a.command == "sign":
        print(json.dumps(sign(a.scheme, a.secret, body, a.url, a.at)))
    else:
        print("true" if verify(a.scheme, a.secret, body, json.loads(a.headers), a.url) else "false")


if __name__ == "__main__":
    sys.exit(main())
