"""Schemathesis hook: every generated request carries the session of a logged-in master and a
fresh DPoP proof (RFC 9449) signed with that session's device key, so the fuzzer reaches the
handlers behind authentication instead of stopping at 401.

Reads AK_PROFILE (the `agentkeys` profile directory: device.jwk and session.json),
AK_PUBLIC_URL (the server's public_url, which every proof's htu names) and AK_OMNIS (omnis of
real actors, comma-separated: half the cases with an {omni} path parameter get one of them, so
the handlers behind the lookup are reached too). Each request names a random client address in
X-Forwarded-For (the server trusts loopback as a proxy in this run), so the per-IP rate limit
does not answer most cases with 429.
"""

import base64
import hashlib
import json
import os
import random
import time
import uuid

import schemathesis
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

PROFILE = os.environ["AK_PROFILE"]
PUBLIC_URL = os.environ["AK_PUBLIC_URL"].rstrip("/")
OMNIS = [o for o in os.environ.get("AK_OMNIS", "").split(",") if o]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


with open(os.path.join(PROFILE, "device.jwk"), encoding="utf-8") as f:
    _JWK = json.load(f)
_KEY = ec.derive_private_key(int.from_bytes(unb64(_JWK["d"]), "big"), ec.SECP256R1())
_PUBLIC = {k: _JWK[k] for k in ("kty", "crv", "x", "y")}
with open(os.path.join(PROFILE, "session.json"), encoding="utf-8") as f:
    _TOKEN = json.load(f)["session_jwt"]


# Routes that take a DPoP proof without a session (the key that starts a flow finishes it).
TOKENLESS = ("/v1/auth/", "/v1/link/redeem", "/v1/pairing/request", "/v1/pairing/poll")


def proof(method: str, url: str, token) -> str:
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": _PUBLIC}
    claims = {
        "htm": method,
        "htu": url,
        "iat": int(time.time()),
        "jti": uuid.uuid4().hex,
    }
    if token is not None:
        claims["ath"] = b64(hashlib.sha256(token.encode()).digest())
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    der = _KEY.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return signing_input + "." + b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


@schemathesis.auth()
class DpopSession:
    def get(self, case, ctx):
        return _TOKEN

    def set(self, case, data, ctx):
        if OMNIS and case.path_parameters and "omni" in case.path_parameters:
            if random.random() < 0.5:
                case.path_parameters["omni"] = random.choice(OMNIS)
        case.headers = case.headers or {}
        case.headers["X-Forwarded-For"] = ".".join(str(random.randrange(1, 255)) for _ in range(4))
        path = case.formatted_path
        token = None if path.startswith(TOKENLESS) else data
        if token is not None:
            case.headers["Authorization"] = f"DPoP {token}"
        case.headers["DPoP"] = proof(case.method.upper(), PUBLIC_URL + path, token)
