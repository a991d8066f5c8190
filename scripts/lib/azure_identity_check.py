"""One azure-identity call against the mock Azure endpoints, then the token's
exchange at the mock auth service (which verifies it). Driven by
scripts/check-azure-clients, one process per case so azure-identity and MSAL read a
fresh environment:

    python azure_identity_check.py CASE AUTH_URL [CLIENT_ID]

CASE: `token` (ManagedIdentityCredential with the environment as given, expected to
succeed) or `refused` (expected to raise ClientAuthenticationError). Prints one JSON
line: {"ok": bool, "detail": str, "oid": ..., "sub": ...}. Never prints a token.
"""
import base64
import json
import sys
import urllib.error
import urllib.request

from azure.core.exceptions import ClientAuthenticationError
from azure.identity import CredentialUnavailableError, ManagedIdentityCredential

SCOPE = "https://management.azure.com/.default"


def claims(jwt):
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def exchange(auth_url, token):
    req = urllib.request.Request(
        auth_url.replace(":jwtType", "api"),
        data=b"{}",
        method="POST",
        headers={
            "Authorization": "Bearer " + token,
            "X-Cloud-Provider": "azure",
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return claims(json.load(resp)["jwt"])


def main():
    case, auth_url = sys.argv[1], sys.argv[2]
    client_id = sys.argv[3] if len(sys.argv) > 3 else None
    out = {"ok": False, "detail": ""}
    try:
        cred = ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
        token = cred.get_token(SCOPE)
        c = claims(token.token)
        out.update(oid=c.get("oid"), aud=c.get("aud"), expires_on=token.expires_on)
        if case == "refused":
            out["detail"] = "azure-identity accepted what it should refuse"
        else:
            issued = exchange(auth_url, token.token)
            out.update(ok=issued.get("sub") == c.get("oid"), sub=issued.get("sub"),
                       provider=issued.get("provider"), detail="exchanged")
    # MSAL refuses a challenge outside the key directory by construction: it reads
    # only /var/opt/azcmagent/tokens/<basename>.key, which then does not exist (OSError).
    except (ClientAuthenticationError, CredentialUnavailableError, ValueError, OSError) as e:
        out["detail"] = "%s: %s" % (type(e).__name__, str(e).splitlines()[0][:300])
        out["ok"] = case == "refused"
    except urllib.error.HTTPError as e:
        out["detail"] = "exchange refused: HTTP %d %s" % (e.code, e.read()[:300])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
