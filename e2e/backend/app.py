"""The e2e test backend: a FastAPI app in the shape of the real one *after*
its UUID compatibility shim is removed. It verifies JWTs only (PyJWT):
HS256 with JWT_SECRET, and, when JWKS_FILE or JWKS_URL is set, ES256/RS256
with those keys; audience "authenticated", exp and sub required. A legacy
UUID is what it always was for PyJWT: "Not enough segments".

  /api/v1/pam/ws  WebSocket; token from ?token= or Authorization: Bearer.
                  Invalid: accept, then close 4001. Valid: send a hello JSON
                  (sub, legacy, via, token_sha256, ...), then echo every
                  message; a text message "close:CODE:REASON" makes it close
                  with that code and reason.
  /api/v1/me      Authorization: Bearer -> {"sub", "legacy", ...} or 401.
  /healthz        200.

LEGACY_UUID=reject (opt-in, off by default; the e2e tests never set it)
turns on the seed's UUID shim in its rejecting form, for the benchmark's
reconnect storm (bench/): a ?token= that matches a UUID regex is logged as
a warning, accepted and closed with 4003, as the backend did itself before
authgate.

Run (Debian's packages only; PyPI is not reachable):
  JWT_SECRET=... /usr/bin/python3 -m uvicorn app:app --app-dir e2e/backend --port 8000
"""

import hashlib
import json
import logging
import os
import re
import urllib.request

import jwt
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse

SECRET = os.environ["JWT_SECRET"]
AUDIENCE = os.environ.get("JWT_AUDIENCE", "authenticated")
JWKS_FILE = os.environ.get("JWKS_FILE", "")
JWKS_URL = os.environ.get("JWKS_URL", "")
LEGACY_UUID = os.environ.get("LEGACY_UUID", "")  # "reject": the seed's shim, rejecting
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_log = logging.getLogger("uvicorn.error")

app = FastAPI()
_jwks = None


def _keys():
    """The JWKS (ES256/RS256 verification keys), loaded once, lazily: the
    URL may be authgate's /jwks.json, which starts after this backend."""
    global _jwks
    if _jwks is None and (JWKS_FILE or JWKS_URL):
        if JWKS_FILE:
            with open(JWKS_FILE) as f:
                data = f.read()
        else:
            with urllib.request.urlopen(JWKS_URL, timeout=5) as r:
                data = r.read().decode()
        _jwks = jwt.PyJWKSet.from_json(data)
    return _jwks


def verify(token):
    """Returns the claims of a valid token; raises otherwise."""
    if not token:
        raise jwt.InvalidTokenError("no token")
    header = jwt.get_unverified_header(token)  # a UUID: "Not enough segments"
    alg = header.get("alg")
    if alg == "HS256":
        key = SECRET
    elif alg in ("ES256", "RS256"):
        keys = _keys()
        if keys is None:
            raise jwt.InvalidTokenError("no JWKS configured")
        matching = [k for k in keys.keys if k.key_id == header.get("kid")]
        if not matching:
            raise jwt.InvalidTokenError("unknown kid")
        key = matching[0].key
    else:
        raise jwt.InvalidTokenError("algorithm not allowed: %r" % alg)
    claims = jwt.decode(token, key, algorithms=[alg], audience=AUDIENCE,
                        options={"require": ["exp", "sub"]})
    if not claims.get("sub"):
        raise jwt.InvalidTokenError("empty sub")
    return claims


def _bearer(headers):
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return ""


def _who(claims, token, via, headers):
    amr = claims.get("amr") or []
    legacy = any(isinstance(a, dict) and a.get("method") == "legacy_uuid" for a in amr)
    return {
        "sub": claims["sub"],
        "legacy": legacy,
        "iss": claims.get("iss", ""),
        "via": via,
        "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
        "x_authgate_class": headers.get("x-authgate-class", ""),
        "x_authgate_legacy": headers.get("x-authgate-legacy", ""),
        "protocols": headers.get("sec-websocket-protocol", ""),
        "extensions": headers.get("sec-websocket-extensions", ""),
    }


@app.get("/healthz")
async def healthz():
    return {"ok": True}


@app.get("/api/v1/me")
async def me(request: Request):
    token = _bearer(request.headers)
    try:
        claims = verify(token)
    except Exception as e:  # noqa: BLE001 - any failure is a 401
        return JSONResponse({"detail": "invalid token: %s" % e}, status_code=401)
    return _who(claims, token, "header", request.headers)


@app.websocket("/api/v1/pam/ws")
async def pam_ws(ws: WebSocket):
    token, via = ws.query_params.get("token", ""), "query"
    if LEGACY_UUID == "reject" and _UUID.match(token):
        # The seed's shim: a UUID regex and a warning, here rejecting.
        _log.warning("legacy UUID token rejected: user %s", token.lower())
        await ws.accept()
        await ws.close(code=4003, reason="legacy authentication no longer accepted")
        return
    if not token:
        token, via = _bearer(ws.headers), "header"
    try:
        claims = verify(token)
    except Exception:  # noqa: BLE001
        # What the real backend does without its shim: refuse, with a code
        # the client can read (so: accept, then close).
        await ws.accept()
        await ws.close(code=4001, reason="invalid token")
        return
    # Subprotocols other than authgate's bearer entries reach us; pick
    # "echo" when offered, none otherwise.
    offered = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    await ws.accept(subprotocol="echo" if "echo" in offered else None)
    await ws.send_text(json.dumps({"hello": _who(claims, token, via, ws.headers)}))
    while True:
        msg = await ws.receive()
        if msg["type"] == "websocket.disconnect":
            return
        text, data = msg.get("text"), msg.get("bytes")
        if text is not None:
            if text.startswith("close:"):
                _, code, reason = (text.split(":", 2) + [""])[:3]
                await ws.close(code=int(code), reason=reason)
                return
            await ws.send_text(text)
        elif data is not None:
            await ws.send_bytes(data)
