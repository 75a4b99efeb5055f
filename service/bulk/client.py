"""The client of the HTTP bulk endpoint (service.routes.bulk), behind ``hamdex index DATA --server URL``: DATA's
blocks, read as the local bulk job reads them, go to a running server as one NDJSON body (chunked), vectors and
images as base64 float32 (``input_b64``), texts as ``input``.

Resumable like the local job: the job key is service.bulk.job.job_key of the input, the batch size, the limit and the
fingerprint of the server's collection. Before sending, the client asks the server how far that job got
(``GET .../items:bulk/{job}``), skips the items already done and sends the rest with ``start=<items>``; a finished
job is not sent again unless ``restart``. The summary adds the rows the reader skipped to those the server skipped.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
from hamdex.models import data
from hamdex.service.bulk import ndjson
from hamdex.service.bulk.job import MAX_EXAMPLES, IndexSummary, SkipReport, job_key, skip_items

from hamdex.progress import progress as progress_bar


class RemoteError(Exception):
    """The server refused (``status`` and ``error_type`` from its error body) or could not be reached."""

    def __init__(
        self, message: str, error_type: str | None = None, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.error_type, self.status = error_type, status
        self.retry_after = retry_after  # seconds, from a 429 or 503 answer's Retry-After (hamdex.client retries)


class BulkClient:
    """A server's bulk endpoint for one collection ("default": /v1/items:bulk)."""

    def __init__(self, server: str, name: str = "default", api_key: str | None = None, **httpx_args: Any) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        timeout = httpx.Timeout(600.0, connect=10.0)  # the reply comes once the last block is written
        self.name, self.prefix = name, "/v1" if name == "default" else f"/v1/collections/{name}"
        self.http = httpx.Client(base_url=server, headers=headers, timeout=timeout, **httpx_args)

    def __enter__(self) -> BulkClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def collection(self) -> dict[str, Any]:
        """The collection's description (name, count, fingerprint, ...)."""
        return self._call("GET", f"/v1/collections/{self.name}")

    def job(self, key: str) -> dict[str, Any] | None:
        """``{"job", "items", "done"}`` of a bulk job, or None when the server has no record of it."""
        try:
            return self._call("GET", f"{self.prefix}/items:bulk/{key}")
        except RemoteError as exc:
            if exc.error_type == "job_not_found":
                return None
            raise

    def send(self, body: Iterable[bytes], *, job: str | None = None, start: int = 0, strict: bool = False) -> dict:
        """POST one NDJSON body (chunks of whole lines); the server's summary."""
        params: dict[str, Any] = {"strict": str(strict).lower(), "start": start}
        if job is not None:
            params["job"] = job
        headers = {"content-type": ndjson.MEDIA_TYPE}
        # 422 rows_skipped: the good rows are written, and the body is the report (service.routes.bulk)
        path = f"{self.prefix}/items:bulk"
        return self._call("POST", path, params=params, content=body, headers=headers, report=("rows_skipped",))

    def _call(self, method: str, path: str, report: tuple[str, ...] = (), **kwargs: Any) -> Any:
        """The JSON answer; RemoteError for an error, unless its error type is one of ``report``."""
        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise RemoteError(f"{method} {self.http.base_url}{path.lstrip('/')} failed: {exc!r}") from exc
        if resp.status_code < 400:
            return resp.json()
        try:
            body = resp.json()
            error_type, message = body["error_type"], body["error"]
        except (ValueError, KeyError, TypeError):
            error_type, message = None, resp.text[:500]
        if error_type in report:
            return body
        retry_after = resp.headers.get("retry-after", "")
        seconds = float(retry_after) if retry_after.replace(".", "", 1).isdigit() else None
        raise RemoteError(f"{resp.status_code} {error_type}: {message}", error_type, resp.status_code, seconds)


def index_file(
    path: str | Path,
    client: BulkClient,
    *,
    batch_size: int = 4096,
    limit: int | None = None,
    progress: bool = True,
    strict: bool = False,
    restart: bool = False,
    columns: Sequence[str] | None = None,
) -> IndexSummary:
    """Send a file or folder, resuming an interrupted run of the same job (see the module docstring).
    ``columns``: a header-less CSV's column names (models.data)."""
    key = job_key(path, batch_size, limit, client.collection()["fingerprint"], columns)
    record = None if restart else client.job(key)
    if record is not None and record["done"]:
        count = client.collection()["count"]
        return IndexSummary(0, 0.0, count, already_done=True, resumed_from=record["items"])
    start = 0 if record is None else record["items"]
    total = data.count_items(path)
    total = min(total, limit) if total is not None and limit is not None else total or limit
    report = SkipReport(strict=strict)
    on_error = None if strict else report.on_read_error
    blocks = data.iter_blocks(path, batch_size, limit=limit, on_error=on_error, columns=columns)
    return index_blocks(
        skip_items(blocks, start), client, total=total, progress=progress, report=report, job=key, start=start
    )


def index_blocks(
    blocks: Iterable[data.Block],
    client: BulkClient,
    *,
    total: int | None = None,
    progress: bool = True,
    strict: bool = False,
    report: SkipReport | None = None,
    job: str | None = None,
    start: int = 0,
) -> IndexSummary:
    """Send every block as one request; ``report`` holds the rows the reader skipped. Nothing to send (the rest
    of a resumed job, or only rows the reader skipped) sends nothing: the server refuses a body with no rows."""
    report = report or SkipReport(strict=strict)
    t0 = time.perf_counter()
    blocks = iter(blocks)
    first = next(blocks, None)
    if first is None:
        reply = {"items": 0, "reasons": {}, "examples": {}, "collection_count": client.collection()["count"]}
    else:
        with progress_bar(total=total, initial=start, desc="sending", enabled=progress, smoothing=0.1) as bar:
            body = _body(itertools.chain([first], blocks), bar)
            reply = client.send(body, job=job, start=start, strict=report.strict)
    reasons = report.reasons + Counter(reply["reasons"])
    examples = {reason: list(report.examples.get(reason, [])) for reason in reasons}
    for reason, seen in reply["examples"].items():
        examples[reason] = (examples[reason] + seen)[:MAX_EXAMPLES]
    return IndexSummary(
        reply["items"],
        time.perf_counter() - t0,
        reply["collection_count"],
        sum(reasons.values()),
        reasons,
        examples,
        resumed_from=start,
    )


def _body(blocks: Iterable[data.Block], bar: Any) -> Iterator[bytes]:
    for block in blocks:
        yield b"".join(ndjson.block_lines(block))
        bar.update(len(block))
