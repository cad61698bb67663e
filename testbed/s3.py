"""A tiny AWS SigV4 S3 client (stdlib only), to look at OpenList's S3 answers directly.

Kopia is the oracle for backups; this exists only to check the OpenList quirks
docs/upstream-behaviour.md lists (ETag, listing of empty folders, modification times) on the wire.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass

from components.s3_signature import DEFAULT_REGION, sign

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
    region: str = DEFAULT_REGION

    def request(self, method: str, path: str, query: dict[str, str] | None = None, body: bytes = b"") -> S3Response:
        signed = sign(
            method,
            urllib.parse.urlsplit(self.endpoint).netloc,
            path,
            access_key=self.access_key,
            secret_key=self.secret_key,
            query=query,
            body=body,
            region=self.region,
        )
        url = f"{self.endpoint}{signed.target}"
        request = urllib.request.Request(url, data=body or None, method=method, headers=signed.headers)  # noqa: S310
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
