"""google-auth (Google's own Python library) against the mock Google STS, OAuth and
IAM Credentials, with the same external_account files s2iam reads: if Google's
library accepts the mock's answers and the mock accepts Google's requests, the
mock is faithful; s2iam then runs on the very same files.

Usage: google_auth_check.py CLOUD_URL AUTH_URL_TEMPLATE S2IAM_BINARY TMPDIR
Prints "ok   NAME" / "FAIL NAME" lines and ends with "N passed, M failed".
"""

import json
import os
import subprocess
import sys
import urllib.request

import google.auth
import google.auth.aws
import google.auth.exceptions
import google.auth.identity_pool
import google.auth.pluggable
import google.auth.transport.requests

CLOUD, AUTH_TEMPLATE, S2IAM, TMP = sys.argv[1:5]
POOL = "//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/s2iam-pool/providers/"
OIDC_AUDIENCE = POOL + "s2iam-oidc"
AWS_AUDIENCE = POOL + "s2iam-aws"
FEDERATED_SA = "s2iam-federated@s2iam-test-project.iam.gserviceaccount.com"
S2IAM_AUDIENCE = "https://authsvc.singlestore.com"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
JWT = "urn:ietf:params:oauth:token-type:jwt"
AWS4 = "urn:ietf:params:aws:token-type:aws4_request"
VERIFY_URL = "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15"

passed = failed = 0


def check(name, fn):
    global passed, failed
    try:
        fn()
        print(f"ok   {name}")
        passed += 1
    except Exception as e:  # noqa: BLE001 - report every failure and go on
        print(f"FAIL {name}: {type(e).__name__}: {e}")
        failed += 1


def http(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, resp.read().decode()


def external_account(name, audience, token_type, source, impersonate):
    doc = {
        "type": "external_account",
        "audience": audience,
        "subject_token_type": token_type,
        "token_url": f"{CLOUD}/v1/token",
        "credential_source": source,
    }
    if impersonate:
        doc["service_account_impersonation_url"] = (
            f"{CLOUD}/v1/projects/-/serviceAccounts/{FEDERATED_SA}:generateAccessToken"
        )
    path = os.path.join(TMP, name)
    with open(path, "w") as f:
        json.dump(doc, f)
    return path


def google_auth_token(path):
    # from_file, not load_credentials_from_file: the latter also asks Cloud Resource
    # Manager (a real Google host) for the project id.
    with open(path) as f:
        source = json.load(f)["credential_source"]
    if "environment_id" in source:
        kind = google.auth.aws
    elif "executable" in source:
        kind = google.auth.pluggable
    else:
        kind = google.auth.identity_pool
    creds = kind.Credentials.from_file(path, scopes=[CLOUD_PLATFORM])
    creds.refresh(google.auth.transport.requests.Request())
    assert creds.token, "no token"
    return creds.token


def id_token_with(access_token):
    """What s2iam does after the STS exchange: generateIdToken as the federated SA."""
    status, body = http(
        "POST",
        f"{CLOUD}/v1/projects/-/serviceAccounts/{FEDERATED_SA}:generateIdToken",
        json.dumps({"audience": S2IAM_AUDIENCE, "includeEmail": True}).encode(),
        {"Authorization": f"Bearer {access_token}", "Content-Type": "application/json"},
    )
    assert status == 200, body
    return json.loads(body)["token"]


def auth_service_accepts(id_token):
    url = AUTH_TEMPLATE.replace(":jwtType", "api")
    status, body = http("POST", url, b"{}", {"Authorization": f"Bearer {id_token}", "Content-Type": "application/json"})
    assert status == 200 and json.loads(body).get("jwt"), body


def s2iam_identity(path, extra_env=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["GOOGLE_APPLICATION_CREDENTIALS"] = path
    env.update(extra_env or {})
    out = subprocess.run([S2IAM, "identity", "--provider", "gcp", "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    ident = json.loads(out.stdout)
    assert ident["identifier"] == FEDERATED_SA, ident
    assert ident["additional_claims"]["credential_source"].startswith("external_account"), ident


_, subject = http("GET", f"{CLOUD}/_mock/google/subject-token?sub=google-auth-check")
token_file = os.path.join(TMP, "subject-token")
with open(token_file, "w") as f:
    f.write(subject)
file_source = {"file": token_file}


def oidc_no_impersonation():
    path = external_account("oidc.json", OIDC_AUDIENCE, JWT, file_source, False)
    federated = google_auth_token(path)
    auth_service_accepts(id_token_with(federated))


def oidc_impersonation():
    path = external_account("oidc-imp.json", OIDC_AUDIENCE, JWT, file_source, True)
    google_auth_token(path)
    s2iam_identity(path)


def oidc_json_format():
    json_file = os.path.join(TMP, "subject.json")
    with open(json_file, "w") as f:
        json.dump({"access_token": subject}, f)
    source = {"file": json_file, "format": {"type": "json", "subject_token_field_name": "access_token"}}
    path = external_account("oidc-json.json", OIDC_AUDIENCE, JWT, source, True)
    google_auth_token(path)
    s2iam_identity(path)


def executable():
    script = os.path.join(TMP, "issue-token")
    response = {"version": 1, "success": True, "token_type": JWT, "id_token": subject, "expiration_time": 4102444800}
    with open(script, "w") as f:
        f.write("#!/bin/sh\necho '" + json.dumps(response) + "'\n")
    os.chmod(script, 0o755)
    source = {"executable": {"command": script, "timeout_millis": 5000}}
    path = external_account("exe.json", OIDC_AUDIENCE, JWT, source, True)
    os.environ["GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES"] = "1"
    try:
        google_auth_token(path)
        s2iam_identity(path, {"GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES": "1"})
    finally:
        del os.environ["GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES"]


def aws_keys():
    base = f"{CLOUD}/latest/meta-data/iam/security-credentials/"
    _, role = http("GET", base)
    _, creds = http("GET", base + role.strip())
    creds = json.loads(creds)
    return {
        "AWS_ACCESS_KEY_ID": creds["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": creds["SecretAccessKey"],
        "AWS_SESSION_TOKEN": creds["Token"],
        "AWS_REGION": "us-east-1",
    }


def aws():
    keys = aws_keys()
    source = {"environment_id": "aws1", "regional_cred_verification_url": VERIFY_URL}
    plain = external_account("aws.json", AWS_AUDIENCE, AWS4, source, False)
    imp = external_account("aws-imp.json", AWS_AUDIENCE, AWS4, source, True)
    saved = dict(os.environ)
    os.environ.update(keys)
    try:
        federated = google_auth_token(plain)
        google_auth_token(imp)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    auth_service_accepts(id_token_with(federated))
    s2iam_identity(imp, keys)


def sts_error_shape():
    bad = os.path.join(TMP, "bad-token")
    with open(bad, "w") as f:
        f.write("not-a-jwt")
    path = external_account("bad.json", OIDC_AUDIENCE, JWT, {"file": bad}, False)
    try:
        google_auth_token(path)
    except (google.auth.exceptions.RefreshError, google.auth.exceptions.OAuthError) as e:
        assert "invalid_grant" in str(e), str(e)
        return
    raise AssertionError("google-auth accepted a garbage subject token")


def unknown_audience():
    path = external_account("bad-aud.json", POOL + "nope", JWT, file_source, False)
    try:
        google_auth_token(path)
    except (google.auth.exceptions.RefreshError, google.auth.exceptions.OAuthError) as e:
        assert "invalid_target" in str(e), str(e)
        return
    raise AssertionError("google-auth accepted an unknown audience")


check("google-auth: OIDC file source, STS token → generateIdToken → auth service", oidc_no_impersonation)
check("google-auth + s2iam: OIDC file source with impersonation (generateAccessToken)", oidc_impersonation)
check("google-auth + s2iam: JSON-format file source", oidc_json_format)
check("google-auth + s2iam: executable source", executable)
check("google-auth + s2iam: aws1 signed GetCallerIdentity subject token", aws)
check("google-auth: STS invalid_grant error shape", sts_error_shape)
check("google-auth: STS invalid_target error shape", unknown_audience)
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
