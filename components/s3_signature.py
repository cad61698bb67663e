"""AWS Signature Version 4 for S3 requests, stdlib only.

One home for the signing: `OpenListSettings` (components/openlist_config.py) signs a request with the declared
keys to see that OpenList's S3 port enforces them, and the test bed's S3 client (testbed/s3.py) signs with it.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

ALGORITHM = "AWS4-HMAC-SHA256"
#: OpenList (gofakes3) accepts any region; Kopia's own default.
DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class SignedRequest:
    target: str  # the request target to send: the canonical path and query, as signed
    headers: dict[str, str]  # Host, the content hash, the date and Authorization


def sign(
    method: str,
    netloc: str,
    path: str,
    *,
    access_key: str,
    secret_key: str,
    query: Mapping[str, str] | None = None,
    body: bytes = b"",
    region: str = DEFAULT_REGION,
    now: datetime.datetime | None = None,
) -> SignedRequest:
    """A path-style S3 request to `netloc` (host:port, as the Host header carries it), signed with the key pair."""
    now = now or datetime.datetime.now(datetime.UTC)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload_hash = hashlib.sha256(body).hexdigest()
    canonical_query = "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
        for k, v in sorted((query or {}).items())
    )
    canonical_path = urllib.parse.quote(path, safe="/-_.~")
    headers = {"host": netloc, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        [
            method,
            canonical_path,
            canonical_query,
            "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)),
            signed,
            payload_hash,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = f"AWS4{secret_key}".encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (
        f"{ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
    )
    return SignedRequest(canonical_path + (f"?{canonical_query}" if canonical_query else ""), headers)
