"""Mints test JWTs with PyJWT: an implementation independent of authgate's
(golang-jwt). One token per --sub, one per line on stdout.

  JWT_SECRET=... /usr/bin/python3 mint.py --sub UUID [--sub UUID...]
      [--exp SECONDS] [--aud authenticated] [--iss ISSUER]
      [--alg HS256|ES256 --key PEMFILE --kid KID]

--exp is relative to now (negative: already expired). Claims are Supabase's
shape: sub, aud, exp, iat, role, and amr [{"method": "password"}].
"""

import argparse
import os
import sys
import time

import jwt


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sub", action="append", required=True)
    p.add_argument("--exp", type=int, default=3600)
    p.add_argument("--aud", default="authenticated")
    p.add_argument("--iss", default="")
    p.add_argument("--alg", default="HS256")
    p.add_argument("--key", default="")
    p.add_argument("--kid", default="")
    a = p.parse_args()
    if a.alg.startswith("HS"):
        key = os.environ["JWT_SECRET"]
    else:
        with open(a.key) as f:
            key = f.read()
    headers = {"kid": a.kid} if a.kid else None
    now = int(time.time())
    out = []
    for sub in a.sub:
        claims = {"sub": sub, "aud": a.aud, "iat": min(now, now + a.exp) - 60, "exp": now + a.exp,
                  "role": "authenticated", "amr": [{"method": "password", "timestamp": now}]}
        if a.iss:
            claims["iss"] = a.iss
        out.append(jwt.encode(claims, key, algorithm=a.alg, headers=headers))
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
