"""A typed Python client of the hamdex REST API (docs/api.md, docs/client.md): :class:`Client` (blocking) and
:class:`AsyncClient` (asyncio), both on httpx, with the same methods and the same answers.

Requests and answers are the service's own pydantic schemas (``hamdex.service.schemas``), and numpy arrays where
the data is numbers: codes are ``uint8`` rows ``(n, n_bits // 8)`` in the one bit order of ``hamdex.models.bits``,
vectors and latents ``float32``. Errors are typed (:class:`HamdexError` and its subclasses, by HTTP status) and
carry the server's ``error_type`` and the status.

A request the server did not take in (429 ``queue_full``, 503 ``not_ready``, or a connection that could not be
opened) is sent again, at most ``max_retries`` more times, after the server's ``Retry-After`` when it gives one,
else after an exponential backoff. The API key comes from the ``api_key`` argument or ``HAMDEX_API_KEY``.

Export and snapshots are not here: the server has no routes for them yet (issue 22, part 2).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import quote

import httpx
import numpy as np
from pydantic import BaseModel, ValidationError

from hamdex.service import schemas

if TYPE_CHECKING:
    from hamdex.service.bulk.job import IndexSummary

__all__ = [
    "AsyncClient",
    "AuthError",
    "Client",
    "Conflict",
    "Encoded",
    "HamdexError",
    "InvalidRequest",
    "Item",
    "NotFound",
    "RateLimited",
    "ServerError",
    "Unavailable",
]

T = TypeVar("T")
DEFAULT_URL = "http://127.0.0.1:8000"
RETRY_STATUSES = (429, 503)  # answers to a request the server did not take in
# Errors of a request that never reached the server: safe to send again, whatever it does
RETRY_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout)


class HamdexError(Exception):
    """The server refused a request, or could not be reached (``status`` None). ``error_type`` is the server's
    (service/errors.py's table), or ``connection_error`` / ``validation_error`` for what never reached it."""

    def __init__(
        self, message: str, error_type: str | None = None, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message, self.error_type, self.status, self.retry_after = message, error_type, status, retry_after


class InvalidRequest(HamdexError):
    """400, 413, 414, 422: the request is malformed or out of bounds (or failed the schema before it was sent)."""


class AuthError(HamdexError):
    """401 (no key, or an unknown one) or 403 (a key without the scope the route needs)."""


class NotFound(HamdexError):
    """404: no such item, collection, model or bulk job."""


class Conflict(HamdexError):
    """409: e.g. a fingerprint mismatch, a collection that exists, a search parameter the index kind refuses."""


class RateLimited(HamdexError):
    """429: the server's queue stayed full through every retry."""


class Unavailable(HamdexError):
    """503 or 504, or a server that could not be reached: it was still loading, or is down."""


class ServerError(HamdexError):
    """Any other 5xx."""


_BY_STATUS: dict[int, type[HamdexError]] = {
    400: InvalidRequest,
    401: AuthError,
    403: AuthError,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
    414: InvalidRequest,
    422: InvalidRequest,
    429: RateLimited,
    503: Unavailable,
    504: Unavailable,
}


def error_for(
    status: int | None, error_type: str | None, message: str, retry_after: float | None = None
) -> HamdexError:
    """The typed exception of an error answer (``status`` None: the server was not reached)."""
    if status is None:
        cls: type[HamdexError] = Unavailable
    else:
        cls = _BY_STATUS.get(status, ServerError if status >= 500 else HamdexError)
    return cls(message, error_type, status, retry_after)


@dataclass(frozen=True)
class Encoded:
    codes: np.ndarray  # uint8 (n, n_bits // 8)
    latent: np.ndarray | None  # float32 (n, n_bits), when asked for
    n_bits: int
    fingerprint: str  # of the server's model: codes of another model are refused (409)


@dataclass(frozen=True)
class Item:
    id: str
    code: np.ndarray  # uint8 (n_bits // 8,)
    metadata: dict[str, Any] | None


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One request and how to read its answer."""

    method: str
    path: str
    parse: Callable[[Any], T]
    json: Any = None
    params: dict[str, Any] | None = None


def _validated(model: type[BaseModel], body: dict[str, Any]) -> dict[str, Any]:
    """``body`` checked against the request schema the server uses, so a bad request fails here, typed."""
    try:
        model.model_validate(body)
    except ValidationError as exc:
        raise InvalidRequest(str(exc), "validation_error") from None
    return body


def _codes_out(wire: Sequence[str]) -> np.ndarray:
    """Hex codes -> uint8 (n, n_bytes)."""
    rows = [bytes.fromhex(code) for code in wire]
    width = len(rows[0]) if rows else 0
    return np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), width).copy()


def _codes_in(codes: np.ndarray | Sequence[str]) -> list[str]:
    """uint8 rows (or one row) -> hex strings; strings (hex or base64) as given."""
    if isinstance(codes, np.ndarray):
        if codes.dtype != np.uint8:
            raise InvalidRequest(f"codes must be uint8 rows (n, n_bits // 8), got {codes.dtype}", "code_format")
        return [row.tobytes().hex() for row in np.atleast_2d(codes)]
    return [codes] if isinstance(codes, str) else list(codes)


def _inputs(inputs: Any) -> list[Any]:
    """Raw inputs as JSON: one text or a list of texts; an array's rows (vectors, or images) as lists."""
    if isinstance(inputs, str):
        return [inputs]
    if isinstance(inputs, np.ndarray):
        return np.asarray(inputs, dtype=np.float32).tolist()
    return list(inputs)


def _retry_after(resp: httpx.Response) -> float | None:
    """Seconds of a ``Retry-After`` header (delta seconds or an HTTP date), or None."""
    value = resp.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _raise_for(resp: httpx.Response) -> None:
    if resp.status_code < 400:
        return
    try:
        body = resp.json()
        error_type, message = body["error_type"], body["error"]
    except (ValueError, KeyError, TypeError):
        error_type, message = None, resp.text[:500]
    raise error_for(resp.status_code, error_type, f"{resp.status_code} {error_type}: {message}", _retry_after(resp))


class _Base:
    """What both clients share: settings, the requests of every method, and the retry policy."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        collection: str = "default",
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_wait: float = 60.0,
    ) -> None:
        self.url, self.collection = url.rstrip("/"), collection
        self.api_key = api_key if api_key is not None else os.environ.get("HAMDEX_API_KEY") or None
        self.timeout, self.max_retries, self.backoff, self.max_wait = timeout, max_retries, backoff, max_wait
        self.headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    # -- retry policy

    def _wait(self, attempt: int, status: int | None, retry_after: float | None = None) -> float | None:
        """Seconds to wait before sending again, or None to stop: the answer is final, or retries are spent.
        ``status`` None: the connection could not be opened."""
        if attempt >= self.max_retries or (status is not None and status not in RETRY_STATUSES):
            return None
        return min(self.max_wait, retry_after if retry_after is not None else self.backoff * 2**attempt)

    def _wait_for(self, attempt: int, resp: httpx.Response | None) -> float | None:
        return self._wait(attempt, None) if resp is None else self._wait(attempt, resp.status_code, _retry_after(resp))

    # -- the requests

    def _prefix(self, collection: str | None) -> str:
        name = collection or self.collection
        return "/v1" if name == "default" else f"/v1/collections/{quote(name, safe='')}"

    def _encode(self, inputs: Any, latent: bool) -> _Call[Encoded]:
        body: dict[str, Any] = {"format": "hex", "latent": latent}
        if isinstance(inputs, np.ndarray):  # vectors or images: packed float32, far smaller than JSON numbers
            values = np.ascontiguousarray(inputs, dtype="<f4")
            values = values[None] if values.ndim == 1 else values
            body["inputs_b64"] = {"data": base64.b64encode(values.tobytes()).decode(), "shape": list(values.shape)}
        else:
            body["inputs"] = _inputs(inputs)

        def parse(data: Any) -> Encoded:
            out = schemas.EncodeResponse.model_validate(data)
            lat = None if out.latent is None else np.asarray(out.latent, dtype=np.float32)
            return Encoded(_codes_out(out.codes), lat, out.n_bits, out.fingerprint)  # type: ignore[arg-type]

        return _Call("POST", "/v1/encode", parse, _validated(schemas.EncodeRequest, body))

    def _upsert(
        self,
        ids: Sequence[str],
        inputs: Any,
        codes: np.ndarray | Sequence[str] | None,
        metadata: Sequence[dict[str, Any] | None] | None,
        fingerprint: str | None,
        collection: str | None,
    ) -> _Call[schemas.ItemsResponse]:
        if (inputs is None) == (codes is None):
            raise InvalidRequest("upsert needs exactly one of inputs or codes", "validation_error")
        ids = [ids] if isinstance(ids, str) else list(ids)
        field, values = ("input", _inputs(inputs)) if codes is None else ("code", _codes_in(codes))
        metas = list(metadata) if metadata is not None else [None] * len(ids)
        if not len(ids) == len(values) == len(metas):
            raise InvalidRequest(f"{len(ids)} ids, {len(values)} {field}s, {len(metas)} metadata", "validation_error")
        items = [
            {"id": i, field: v, **({} if m is None else {"metadata": m})}
            for i, v, m in zip(ids, values, metas, strict=True)
        ]
        body = {"items": items, **({} if fingerprint is None else {"fingerprint": fingerprint})}
        path = f"{self._prefix(collection)}/items"
        return _Call("POST", path, schemas.ItemsResponse.model_validate, _validated(schemas.ItemsRequest, body))

    def _item_path(self, item_id: str, collection: str | None) -> str:
        return f"{self._prefix(collection)}/items/{quote(item_id, safe='')}"

    def _get(self, item_id: str, collection: str | None) -> _Call[Item]:
        def parse(data: Any) -> Item:
            out = schemas.ItemOut.model_validate(data)
            return Item(out.id, _codes_out([out.code])[0], out.metadata)  # type: ignore[list-item]

        return _Call("GET", self._item_path(item_id, collection), parse, params={"format": "hex"})

    def _delete(self, item_id: str, collection: str | None) -> _Call[schemas.DeleteResponse]:
        return _Call("DELETE", self._item_path(item_id, collection), schemas.DeleteResponse.model_validate)

    def _search(
        self,
        inputs: Any,
        codes: np.ndarray | Sequence[str] | None,
        ids: Sequence[str] | None,
        options: dict[str, Any],
        collection: str | None,
    ) -> _Call[list[list[schemas.Hit]]]:
        given = [(f, v) for f, v in (("input", inputs), ("code", codes), ("id", ids)) if v is not None]
        if len(given) != 1:
            raise InvalidRequest("search needs exactly one of inputs, codes or ids", "validation_error")
        field, value = given[0]
        if field == "input":
            queries = _inputs(value)
        else:
            queries = _codes_in(value) if field == "code" else [value] if isinstance(value, str) else list(value)
        body = {"queries": [{field: q} for q in queries], **{k: v for k, v in options.items() if v is not None}}

        def parse(data: Any) -> list[list[schemas.Hit]]:
            return schemas.SearchResponse.model_validate(data).results

        return _Call("POST", f"{self._prefix(collection)}/search", parse, _validated(schemas.SearchRequest, body))

    def _create(self, name: str, options: dict[str, Any]) -> _Call[schemas.CollectionInfo]:
        body = {"name": name, **{k: v for k, v in options.items() if v is not None}}
        body = _validated(schemas.CreateCollectionRequest, body)
        return _Call("POST", "/v1/collections", schemas.CollectionInfo.model_validate, body)

    def _named(self, method: str, name: str, parse: Callable[[Any], T]) -> _Call[T]:
        return _Call(method, f"/v1/collections/{quote(name, safe='')}", parse)

    # -- bulk upload (blocking: the bulk client of service.bulk.client, in a thread for AsyncClient)

    def _bulk(
        self, path: str | Path, collection: str | None, transport: Any, sleep: Callable[[float], Any], **options: Any
    ) -> IndexSummary:
        """Send a file or folder through the bulk endpoint; a refused or broken upload is resumed where the server's
        record of the job says it stopped (service.bulk.client.index_file), within the retry policy."""
        from hamdex.service.bulk.client import BulkClient, RemoteError, index_file

        extra = {"transport": transport} if isinstance(transport, httpx.BaseTransport) else {}
        restart = options.pop("restart")
        for attempt in itertools.count():
            with BulkClient(self.url, collection or self.collection, self.api_key, **extra) as bulk:
                try:
                    # a retry resumes the job this call started, even one it restarted
                    return index_file(path, bulk, restart=restart and attempt == 0, **options)
                except RemoteError as exc:
                    wait = self._wait(attempt, exc.status, exc.retry_after)
                    if wait is None:
                        error_type = exc.error_type or ("connection_error" if exc.status is None else None)
                        raise error_for(exc.status, error_type, str(exc), exc.retry_after) from exc
            sleep(wait)
        raise AssertionError("unreachable")


def _snapshot(data: Any) -> schemas.SnapshotInfo:
    return schemas.SnapshotInfo.model_validate(data)


def _snapshots(data: Any) -> list[schemas.SnapshotInfo]:
    return schemas.SnapshotList.model_validate(data).snapshots


def _export_lines(path: Path) -> Any:
    """An export file's NDJSON lines, in chunks: an NDJSON file as it is, a Parquet one converted block by block."""
    if path.suffix != ".parquet":
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                yield chunk
        return
    import json

    from hamdex.index import transfer  # FAISS and pyarrow: only for a Parquet file

    header, blocks = transfer.read_file(path, "parquet")
    yield json.dumps({"header": header.__dict__}).encode() + b"\n"
    for block in blocks:
        rows = ({"id": i, "code": code.hex(), "metadata": meta} for i, code, meta in block)
        yield b"".join(json.dumps(row).encode() + b"\n" for row in rows)


class Client(_Base):
    """A blocking client of one hamdex server. ``collection``: the collection a call uses unless it names another
    ("default": the server's default collection, /v1/...). ``transport``: an httpx transport (tests).

    >>> with Client("http://127.0.0.1:8000") as client:  # doctest: +SKIP
    ...     codes = client.encode(["rocket engines"]).codes  # uint8 (1, n_bits // 8)
    ...     hits = client.search(["rocket engines"], k=5)[0]
    """

    _sleep = staticmethod(time.sleep)  # between attempts (a seam for tests)

    def __init__(self, url: str = DEFAULT_URL, *, transport: httpx.BaseTransport | None = None, **options: Any) -> None:
        super().__init__(url, **options)
        self._transport = transport
        self._http = httpx.Client(base_url=self.url, headers=self.headers, timeout=self.timeout, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: _Call[T]) -> T:
        for attempt in itertools.count():
            try:
                resp: httpx.Response | None = self._http.request(
                    call.method, call.path, json=call.json, params=call.params
                )
            except RETRY_ERRORS as exc:
                resp, error = None, exc
            except httpx.HTTPError as exc:
                raise error_for(None, "connection_error", f"{call.method} {call.path}: {exc!r}") from exc
            wait = self._wait_for(attempt, resp)
            if wait is None:
                if resp is None:
                    raise error_for(None, "connection_error", f"{call.method} {call.path}: {error!r}") from error
                _raise_for(resp)
                return call.parse(resp.json())
            self._sleep(wait)
        raise AssertionError("unreachable")

    def encode(self, inputs: str | Sequence[Any] | np.ndarray, *, latent: bool = False) -> Encoded:
        """Codes of texts, vectors (float32 ``(n, dim)``) or images (``(n, h, w[, c])``) under the server's model."""
        return self._send(self._encode(inputs, latent))

    def upsert(
        self,
        ids: Sequence[str],
        inputs: str | Sequence[Any] | np.ndarray | None = None,
        *,
        codes: np.ndarray | Sequence[str] | None = None,
        metadata: Sequence[dict[str, Any] | None] | None = None,
        fingerprint: str | None = None,
        collection: str | None = None,
    ) -> schemas.ItemsResponse:
        """Insert or replace items from raw inputs or from codes (uint8 rows, or hex/base64 strings); durable when
        it returns. ``fingerprint``: the model the codes came from (refused with Conflict if not the collection's)."""
        return self._send(self._upsert(ids, inputs, codes, metadata, fingerprint, collection))

    def get(self, item_id: str, *, collection: str | None = None) -> Item:
        return self._send(self._get(item_id, collection))

    def delete(self, item_id: str, *, collection: str | None = None) -> schemas.DeleteResponse:
        return self._send(self._delete(item_id, collection))

    def search(
        self,
        inputs: str | Sequence[Any] | np.ndarray | None = None,
        *,
        codes: np.ndarray | Sequence[str] | None = None,
        ids: Sequence[str] | None = None,
        k: int = 10,
        radius: int | None = None,
        filter: dict[str, Any] | None = None,
        include_metadata: bool = True,
        nprobe: int | None = None,
        ef_search: int | None = None,
        rerank: int | None = None,
        pool: int | None = None,
        bits: int | None = None,
        collection: str | None = None,
    ) -> list[list[schemas.Hit]]:
        """The hits of each query (by raw input, code, or stored item id), nearest first. ``filter``: metadata
        fields equal to these values; ``radius``: only hits within this Hamming distance; ``nprobe`` /
        ``ef_search``: the breadth of an ivf / hnsw index; ``rerank=N``: the Hamming top N rescored, hits with a
        ``score`` (``pool=P``: the top P ordered by the per-bit scores first, docs/rerank.md); ``bits``: rank by
        that prefix of nested codes (docs/nested.md)."""
        options = _search_options(k, radius, filter, include_metadata, nprobe, ef_search, rerank, pool, bits)
        return self._send(self._search(inputs, codes, ids, options, collection))

    def collections(self) -> schemas.CollectionList:
        return self._send(_Call("GET", "/v1/collections", schemas.CollectionList.model_validate))

    def create_collection(
        self,
        name: str,
        *,
        model: str = "default",
        index_kind: str = "flat",
        index_params: dict[str, int] | None = None,
        backend: str = "faiss",
        milvus_uri: str | None = None,
        vectors: str | None = None,
    ) -> schemas.CollectionInfo:
        options = {"model": model, "index_kind": index_kind, "index_params": index_params, "backend": backend}
        options["vectors"] = vectors  # "float16" / "int8": keep each item's vector for reranked searches
        return self._send(self._create(name, options | {"milvus_uri": milvus_uri}))

    def get_collection(self, name: str) -> schemas.CollectionInfo:
        return self._send(self._named("GET", name, schemas.CollectionInfo.model_validate))

    def drop_collection(self, name: str) -> schemas.DropResponse:
        return self._send(self._named("DELETE", name, schemas.DropResponse.model_validate))

    def info(self) -> schemas.Info:
        """The server's model (fingerprint, bits, featurizer, versions) and default collection."""
        return self._send(_Call("GET", "/info", schemas.Info.model_validate))

    def health(self) -> bool:
        """Whether the server is ready (model and default collection loaded); no retries."""
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def bulk_upload(
        self,
        path: str | Path,
        *,
        collection: str | None = None,
        batch_size: int = 4096,
        limit: int | None = None,
        strict: bool = False,
        restart: bool = False,
        progress: bool = False,
        columns: Sequence[str] | None = None,
    ) -> IndexSummary:
        """Send a file or folder (any format of ``hamdex.models.data``) through the bulk endpoint as one NDJSON
        upload. Resumable: a rerun with the same arguments continues after the rows the server committed, and one
        that finished sends nothing (``restart``: start over). Bad rows are skipped and counted (``strict``: the
        server refuses the block holding one). ``columns``: the column names of a CSV file without a header line."""
        options = {"batch_size": batch_size, "limit": limit, "strict": strict, "restart": restart, "columns": columns}
        return self._bulk(path, collection, self._transport, self._sleep, progress=progress, **options)

    # -- a collection's data in and out (service.routes.transfer); streamed, not retried

    def export(self, name: str, out: str | Path, *, format: str = "ndjson") -> Path:
        """Write collection ``name``'s export (NDJSON or Parquet: ids, codes, metadata, its header) to ``out``."""
        out = Path(out)
        tmp = out.with_name(f".{out.name}.part")
        path = f"/v1/collections/{quote(name, safe='')}/export"
        with self._http.stream("GET", path, params={"format": format}, timeout=None) as resp:
            if resp.status_code >= 400:
                resp.read()
                _raise_for(resp)
            with open(tmp, "wb") as f:
                for chunk in resp.iter_bytes():
                    f.write(chunk)
        tmp.replace(out)
        return out

    def import_file(self, name: str, path: str | Path) -> schemas.ImportResponse:
        """Load an export (NDJSON, or Parquet sent as NDJSON) into collection ``name``; its codes must come from the
        collection's model (Conflict ``fingerprint_mismatch`` otherwise)."""
        resp = self._http.post(
            f"/v1/collections/{quote(name, safe='')}/import",
            content=_export_lines(Path(path)),
            headers={"content-type": "application/x-ndjson"},
            timeout=None,
        )
        _raise_for(resp)
        return schemas.ImportResponse.model_validate(resp.json())

    def create_snapshot(self, name: str) -> schemas.SnapshotInfo:
        """An online backup of collection ``name`` on the server (admin scope); ``hamdex restore`` brings it back."""
        return self._send(_Call("POST", f"/v1/collections/{quote(name, safe='')}/snapshots", _snapshot))

    def snapshots(self, name: str) -> list[schemas.SnapshotInfo]:
        return self._send(_Call("GET", f"/v1/collections/{quote(name, safe='')}/snapshots", _snapshots))


class AsyncClient(_Base):
    """The asyncio twin of :class:`Client`: the same methods, awaited. ``bulk_upload`` runs the blocking bulk
    client in a worker thread."""

    _sleep = staticmethod(asyncio.sleep)  # between attempts (a seam for tests)

    def __init__(
        self, url: str = DEFAULT_URL, *, transport: httpx.AsyncBaseTransport | None = None, **options: Any
    ) -> None:
        super().__init__(url, **options)
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=self.headers, timeout=self.timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: _Call[T]) -> T:
        for attempt in itertools.count():
            try:
                resp: httpx.Response | None = await self._http.request(
                    call.method, call.path, json=call.json, params=call.params
                )
            except RETRY_ERRORS as exc:
                resp, error = None, exc
            except httpx.HTTPError as exc:
                raise error_for(None, "connection_error", f"{call.method} {call.path}: {exc!r}") from exc
            wait = self._wait_for(attempt, resp)
            if wait is None:
                if resp is None:
                    raise error_for(None, "connection_error", f"{call.method} {call.path}: {error!r}") from error
                _raise_for(resp)
                return call.parse(resp.json())
            await self._sleep(wait)
        raise AssertionError("unreachable")

    async def encode(self, inputs: str | Sequence[Any] | np.ndarray, *, latent: bool = False) -> Encoded:
        return await self._send(self._encode(inputs, latent))

    async def upsert(
        self,
        ids: Sequence[str],
        inputs: str | Sequence[Any] | np.ndarray | None = None,
        *,
        codes: np.ndarray | Sequence[str] | None = None,
        metadata: Sequence[dict[str, Any] | None] | None = None,
        fingerprint: str | None = None,
        collection: str | None = None,
    ) -> schemas.ItemsResponse:
        return await self._send(self._upsert(ids, inputs, codes, metadata, fingerprint, collection))

    async def get(self, item_id: str, *, collection: str | None = None) -> Item:
        return await self._send(self._get(item_id, collection))

    async def delete(self, item_id: str, *, collection: str | None = None) -> schemas.DeleteResponse:
        return await self._send(self._delete(item_id, collection))

    async def search(
        self,
        inputs: str | Sequence[Any] | np.ndarray | None = None,
        *,
        codes: np.ndarray | Sequence[str] | None = None,
        ids: Sequence[str] | None = None,
        k: int = 10,
        radius: int | None = None,
        filter: dict[str, Any] | None = None,
        include_metadata: bool = True,
        nprobe: int | None = None,
        ef_search: int | None = None,
        rerank: int | None = None,
        pool: int | None = None,
        bits: int | None = None,
        collection: str | None = None,
    ) -> list[list[schemas.Hit]]:
        options = _search_options(k, radius, filter, include_metadata, nprobe, ef_search, rerank, pool, bits)
        return await self._send(self._search(inputs, codes, ids, options, collection))

    async def collections(self) -> schemas.CollectionList:
        return await self._send(_Call("GET", "/v1/collections", schemas.CollectionList.model_validate))

    async def create_collection(
        self,
        name: str,
        *,
        model: str = "default",
        index_kind: str = "flat",
        index_params: dict[str, int] | None = None,
        backend: str = "faiss",
        milvus_uri: str | None = None,
        vectors: str | None = None,
    ) -> schemas.CollectionInfo:
        options = {"model": model, "index_kind": index_kind, "index_params": index_params, "backend": backend}
        options["vectors"] = vectors  # "float16" / "int8": keep each item's vector for reranked searches
        return await self._send(self._create(name, options | {"milvus_uri": milvus_uri}))

    async def get_collection(self, name: str) -> schemas.CollectionInfo:
        return await self._send(self._named("GET", name, schemas.CollectionInfo.model_validate))

    async def drop_collection(self, name: str) -> schemas.DropResponse:
        return await self._send(self._named("DELETE", name, schemas.DropResponse.model_validate))

    async def info(self) -> schemas.Info:
        return await self._send(_Call("GET", "/info", schemas.Info.model_validate))

    async def health(self) -> bool:
        try:
            return (await self._http.get("/readyz")).status_code == 200
        except httpx.HTTPError:
            return False

    async def bulk_upload(
        self,
        path: str | Path,
        *,
        collection: str | None = None,
        batch_size: int = 4096,
        limit: int | None = None,
        strict: bool = False,
        restart: bool = False,
        progress: bool = False,
        columns: Sequence[str] | None = None,
    ) -> IndexSummary:
        options = {"batch_size": batch_size, "limit": limit, "strict": strict, "restart": restart, "columns": columns}
        return await asyncio.to_thread(self._bulk, path, collection, None, Client._sleep, progress=progress, **options)

    async def export(self, name: str, out: str | Path, *, format: str = "ndjson") -> Path:
        out = Path(out)
        tmp = out.with_name(f".{out.name}.part")
        path = f"/v1/collections/{quote(name, safe='')}/export"
        async with self._http.stream("GET", path, params={"format": format}, timeout=None) as resp:
            if resp.status_code >= 400:
                await resp.aread()
                _raise_for(resp)
            with open(tmp, "wb") as f:
                async for chunk in resp.aiter_bytes():
                    f.write(chunk)
        tmp.replace(out)
        return out

    async def import_file(self, name: str, path: str | Path) -> schemas.ImportResponse:
        lines = _export_lines(Path(path))

        async def chunks() -> Any:
            while (chunk := await asyncio.to_thread(next, lines, None)) is not None:
                yield chunk

        resp = await self._http.post(
            f"/v1/collections/{quote(name, safe='')}/import",
            content=chunks(),
            headers={"content-type": "application/x-ndjson"},
            timeout=None,
        )
        _raise_for(resp)
        return schemas.ImportResponse.model_validate(resp.json())

    async def create_snapshot(self, name: str) -> schemas.SnapshotInfo:
        return await self._send(_Call("POST", f"/v1/collections/{quote(name, safe='')}/snapshots", _snapshot))

    async def snapshots(self, name: str) -> list[schemas.SnapshotInfo]:
        return await self._send(_Call("GET", f"/v1/collections/{quote(name, safe='')}/snapshots", _snapshots))


def _search_options(
    k: int,
    radius: int | None,
    filter: dict[str, Any] | None,
    include_metadata: bool,
    nprobe: int | None,
    ef_search: int | None,
    rerank: int | None,
    pool: int | None,
    bits: int | None,
) -> dict[str, Any]:
    """A search body's options (None: left out), with ``rerank`` / ``pool`` as the body's ``rerank`` object."""
    if pool is not None and rerank is None:
        raise InvalidRequest("pool needs rerank (the candidates rescored by cosine)", "validation_error")
    scored = None if rerank is None else {"candidates": rerank, **({} if pool is None else {"pool": pool})}
    options = {"k": k, "radius": radius, "filter": filter, "include_metadata": include_metadata}
    return options | {"nprobe": nprobe, "ef_search": ef_search, "rerank": scored, "bits": bits}
