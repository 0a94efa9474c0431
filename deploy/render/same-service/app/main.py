"""The backend of the same-service example: a FastAPI app in the seed's
shape, after its UUID shim was removed. It verifies JWTs only (PyJWT,
HS256 with the Supabase JWT secret, audience "authenticated"); a legacy
UUID never reaches it as such: authgate, in front of it in the same Render
service, rewrites it into a short-lived JWT first.

  /api/v1/pam/ws?token=JWT   WebSocket: {"hello": {"sub", "iss"}}, then an
                             echo of every message; an invalid token is
                             accepted and closed with 4001, as the seed did.
  /api/v1/me                 Authorization: Bearer JWT -> {"sub", "iss"}.

It listens on 127.0.0.1 only (the port authgate's upstream.url names);
authgate takes Render's $PORT.
"""

import os

import jwt
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse

SECRET = os.environ["SUPABASE_JWT_SECRET"]

app = FastAPI()


def claims(token):
    return jwt.decode(token or "", SECRET, algorithms=["HS256"], audience="authenticated",
                      options={"require": ["exp", "sub"]})


@app.websocket("/api/v1/pam/ws")
async def pam_ws(ws: WebSocket):
    await ws.accept()
    try:
        c = claims(ws.query_params.get("token"))
    except jwt.InvalidTokenError as e:
        await ws.close(code=4001, reason="invalid token: %s" % e)
        return
    await ws.send_json({"hello": {"sub": c["sub"], "iss": c.get("iss", "")}})
    try:
        while True:
            await ws.send_text(await ws.receive_text())
    except Exception:
        return


@app.get("/api/v1/me")
async def me(request: Request):
    auth = request.headers.get("authorization", "")
    try:
        c = claims(auth.removeprefix("Bearer "))
    except jwt.InvalidTokenError:
        return JSONResponse({"error": "invalid token"}, status_code=401)
    return {"sub": c["sub"], "iss": c.get("iss", "")}
