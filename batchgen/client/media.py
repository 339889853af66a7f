"""Media on other hosts (result videos, sheet images): fetched without the token."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import anyio
import httpx

from batchgen.client.answers import brief
from batchgen.client.retry import RetryPolicy
from batchgen.errors import ApiPermanentError, ApiTransientError

# a video can be large and its host slow: a generous gap between reads
MEDIA_TIMEOUT = httpx.Timeout(120.0, connect=10.0)


class MediaClient:
    """Downloads result videos: redirects followed, no token, a connection pool of its own."""

    def __init__(self, *, retry: RetryPolicy | None = None) -> None:
        self.retry = retry or RetryPolicy()
        # made on first use: its TLS set-up costs time that most runs need not spend
        self._http: httpx.AsyncClient | None = None

    async def aclose(self) -> None:
        """Close the connection pool, if one was opened."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def download(self, url: str, dest: Path) -> int:
        """Download `url` to `dest` atomically; returns the byte count."""
        part = dest.with_name(dest.name + ".part")
        attempts = self.retry.attempt_count()
        for attempt in range(1, attempts + 1):
            try:
                return await self._download_once(url, part, dest)
            except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
                part.unlink(missing_ok=True)
                if attempt >= attempts:
                    raise ApiTransientError(f"download of {url} failed: {brief(exc)}") from exc
                await anyio.sleep(self.retry.wait(attempt))
        raise AssertionError("unreachable")

    async def _download_once(self, url: str, part: Path, dest: Path) -> int:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=MEDIA_TIMEOUT, follow_redirects=True)
        size = 0
        async with self._http.stream("GET", url) as response:
            response.raise_for_status()
            with part.open("wb") as handle:
                async for chunk in response.aiter_bytes(1 << 16):
                    handle.write(chunk)
                    size += len(chunk)
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(part, dest)
        return size


async def stream_prefix(
    url: str, feed: Callable[[bytes], bool], *, timeout: float = 20.0
) -> int | None:
    """GET `url` without credentials, handing chunks to `feed` until it returns True.

    Returns the Content-Length the server announced (None if it did not say); raises
    ApiTransientError (unreachable) or ApiPermanentError (HTTP error) with one clear line.
    """
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=True) as media:
        try:
            async with media.stream("GET", url) as response:
                if response.status_code >= 400:
                    raise ApiPermanentError(
                        f"HTTP {response.status_code}", status_code=response.status_code
                    )
                length = response.headers.get("content-length")
                async for chunk in response.aiter_bytes(1 << 14):
                    if feed(chunk):
                        break
                return int(length) if length and length.isdigit() else None
        except (httpx.TransportError, httpx.InvalidURL) as exc:
            raise ApiTransientError(f"cannot fetch it ({brief(exc)})") from exc
