# The `helm test` check (standard library only): negotiates on a token hub through the
# Service with a client token it signs with the token key, then publishes to the hub with
# the access key. Exits 0 when the negotiate answers 200 with a connection token and the
# publish 202. Environment: HUBCAST_URL, HUB, HUB_PATH, and ACCESS_KEY / TOKEN_KEY from
# the keys' Secret (either may be absent in development mode).
import base64
import hashlib
import hmac
import json
import os
import sys
import time
import urllib.error
import urllib.request

BASE = os.environ["HUBCAST_URL"].rstrip("/")
HUB = os.environ["HUB"]
HUB_PATH = os.environ.get("HUB_PATH") or "/hubs/" + HUB
ACCESS_KEY = os.environ.get("ACCESS_KEY", "").split(",")[0]
TOKEN_KEY = os.environ.get("TOKEN_KEY", "").split(",")[0]
DEADLINE = time.monotonic() + float(os.environ.get("WAIT_SECONDS", "60"))


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def client_token(key, user):
    """An HS256 JWT, as `hubcast token` mints it: sub and a 5-minute exp."""
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64url(json.dumps({"sub": user, "exp": int(time.time()) + 300}).encode())
    signed = (head + "." + claims).encode()
    return head + "." + claims + "." + b64url(hmac.new(key.encode(), signed, hashlib.sha256).digest())


def call(method, path, body, headers):
    """(status, text); retried while the Service has no ready pod yet (connection
    errors, 502/503) until WAIT_SECONDS have passed."""
    while True:
        req = urllib.request.Request(BASE + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode()
            if status not in (502, 503) or time.monotonic() > DEADLINE:
                return status, text
        except OSError as e:
            if time.monotonic() > DEADLINE:
                return 0, str(e)
        time.sleep(2)


def main():
    headers = {"content-type": "text/plain;charset=UTF-8"}
    if TOKEN_KEY:
        headers["authorization"] = "Bearer " + client_token(TOKEN_KEY, "helm-test")
    status, text = call("POST", HUB_PATH + "/negotiate?negotiateVersion=1", b"", headers)
    print("negotiate %s: %s %s" % (HUB_PATH, status, text[:200]))
    if status != 200 or "connectionToken" not in json.loads(text or "{}"):
        return 1
    body = json.dumps({"target": "HelmTest", "arguments": ["ping"]}).encode()
    headers = {"content-type": "application/json"}
    if ACCESS_KEY:
        headers["authorization"] = "Bearer " + ACCESS_KEY
    status, text = call("POST", "/api/v1/hubs/%s/groups/helm-test" % HUB, body, headers)
    print("publish to %s: %s %s" % (HUB, status, text[:200]))
    return 0 if status in (200, 202) else 1


if __name__ == "__main__":
    sys.exit(main())
