"""A tiny AWS SigV4 S3 client (stdlib only), to look at OpenList's S3 answers directly.

Kopia is the oracle for backups; this exists only to check the OpenList quirks
docs/upstream-behaviour.md lists (ETag, listing of empty folders, modification times) on the wire.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


@dataclass
class S3Response:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class S3Client:
    endpoint: str  # http://host:port
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def request(self, method: str, path: str, query: dict[str, str] | None = None, body: bytes = b"") -> S3Response:
        parts = urllib.parse.urlsplit(self.endpoint)
        now = datetime.datetime.now(datetime.UTC)
        amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        payload_hash = hashlib.sha256(body).hexdigest()
        canonical_query = "&".join(
            f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
            for k, v in sorted((query or {}).items())
        )
        canonical_path = urllib.parse.quote(path, safe="/-_.~")
        headers = {"host": parts.netloc, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
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
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        key = f"AWS4{self.secret_key}".encode()
        for part in (day, self.region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
        )
        url = f"{self.endpoint}{canonical_path}" + (f"?{canonical_query}" if canonical_query else "")
        request = urllib.request.Request(url, data=body or None, method=method, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (loopback test server)
                return S3Response(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as error:
            return S3Response(error.code, dict(error.headers), error.read())

    def list_pages(self, bucket: str, prefix: str) -> Iterator[list[tuple[str, str]]]:
        """ListObjectsV2 of a prefix, page after page as Kopia's S3 client asks for them: (key, LastModified)."""
        query = {"list-type": "2", "prefix": prefix}
        while True:
            answer = self.request("GET", f"/{bucket}", query)
            if answer.status != 200:
                raise RuntimeError(f"list {bucket}/{prefix}: HTTP {answer.status} {answer.body[:200]!r}")
            root = ET.fromstring(answer.body)  # noqa: S314 (our own test server's answer)
            yield [
                (item.findtext(f"{NS}Key") or "", item.findtext(f"{NS}LastModified") or "")
                for item in root.iter(f"{NS}Contents")
            ]
            token = root.findtext(f"{NS}NextContinuationToken") or root.findtext(f"{NS}NextMarker")
            if root.findtext(f"{NS}IsTruncated") != "true" or not token:
                return
            query = {**query, "continuation-token": token}

    def list_keys(self, bucket: str, prefix: str, *, every_page: bool = False) -> list[tuple[str, str]]:
        """(key, LastModified) of the first page, or of `every_page`."""
        pages = self.list_pages(bucket, prefix)
        return [key for page in pages for key in page] if every_page else next(pages)

    def put(self, bucket: str, key: str, body: bytes) -> None:
        answer = self.request("PUT", f"/{bucket}/{key}", body=body)
        if answer.status != 200:
            raise RuntimeError(f"put {bucket}/{key}: HTTP {answer.status} {answer.body[:200]!r}")
