"""Property-based tests of the HTTP API (hypothesis) with nasty values, against the real app in-process.

Values: ids with U+0000 (also ids that differ only after it), lone surrogates (JSON's ``"\\ud800"`` escape), 512+
characters, path characters; metadata nested thousands deep, integers beyond 64 bits, NaN and infinities, unicode
and empty keys; codes of every JSON type; filters; NDJSON bulk rows. Properties:

- every answer is 2xx or a typed 4xx (``error_type`` from service.errors.STATUS, with its status), never 5xx, and
  its body is standard JSON;
- a write changes no item but its own: a model of what the collection should hold is compared with all of it
  after every step;
- what was acknowledged reads back identically: ids, codes and metadata as JSON values (1, 1.0 and true differ).

Bodies are written by hand (:func:`to_json`) so they can hold what Python's json cannot nest or encode as UTF-8.
Bounded for CI: derandomized, a few dozen examples per test.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient
from hamdex.service.app import create_app, wait_ready
from hamdex.service.errors import STATUS
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from tests.conftest import TOPICS, settings_for

ADMIN_KEY = "properties-admin-key-0123"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
N_BITS = 16  # the text_model_dir fixture's codes
MAX_K = 1000
MAX_ID_CHARS = 512
PROFILE = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

# ---- JSON on the wire ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deep:
    """A value nested ``depth`` times in lists or one-key objects: written and compared without recursion."""

    depth: int
    container: str  # "list" or "dict"

    def text(self) -> str:
        if self.container == "list":
            return "[" * self.depth + "1" + "]" * self.depth
        return '{"d":' * self.depth + "1" + "}" * self.depth


def to_json(value: Any) -> str:
    """ASCII JSON: lone surrogates as ``\\udXXX`` escapes, NaN and Infinity as Python writes them, Deep raw."""
    raws: list[str] = []

    def default(obj: Any) -> str:
        if not isinstance(obj, Deep):
            raise TypeError(type(obj).__name__)
        raws.append(obj.text())
        return f"\x00raw{len(raws) - 1}\x00"

    text = json.dumps(value, default=default, separators=(",", ":"))
    for i, raw in enumerate(raws):
        text = text.replace(json.dumps(f"\x00raw{i}\x00"), raw, 1)
    return text


class _Token(str):
    """Literal output of :func:`canon` (a plain str is a JSON string value)."""


def canon(value: Any) -> str:
    """The JSON text of ``value`` with its key order and types (1, 1.0 and true differ), built without recursion so
    that values nested thousands deep compare too."""
    out, stack = [], [value]
    while stack:
        v = stack.pop()
        if isinstance(v, _Token):
            out.append(str(v))
        elif isinstance(v, Deep):
            out.append(v.text())
        elif isinstance(v, dict):
            parts: list[Any] = [_Token("{")]
            for i, (key, x) in enumerate(v.items()):
                parts += [_Token(("," if i else "") + json.dumps(key) + ":"), x]
            stack.extend(reversed([*parts, _Token("}")]))
        elif isinstance(v, list):
            parts = [_Token("[")]
            for i, x in enumerate(v):
                parts += [_Token(","), x] if i else [x]
            stack.extend(reversed([*parts, _Token("]")]))
        else:
            out.append(json.dumps(v))
    return "".join(out)


def _no_constant(name: str) -> Any:
    raise AssertionError(f"the response holds {name}, which is not JSON")


def body_of(resp: httpx.Response) -> Any:
    return json.loads(resp.content, parse_constant=_no_constant)


def outcome(resp: httpx.Response) -> str:
    """The status, and a 4xx's error type (for hypothesis's statistics)."""
    return str(resp.status_code) if resp.is_success else f"{resp.status_code} {body_of(resp).get('error_type')}"


def check_typed(resp: httpx.Response) -> None:
    """2xx, or a 4xx whose body names an error type of the one table, with that type's status."""
    assert resp.status_code < 500, (
        f"{resp.request.method} {resp.request.url.path}: {resp.status_code} {resp.text[:300]}"
    )
    body = body_of(resp) if resp.headers.get("content-type", "").startswith("application/json") else None
    if resp.status_code >= 400:
        assert isinstance(body, dict) and body.get("error_type") in STATUS, (resp.status_code, resp.text[:300])
        assert STATUS[body["error_type"]] == resp.status_code, body


# ---- oracles: what the API documents --------------------------------------------------------------------------


def has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def bad_id(item_id: Any) -> bool:
    """An id the API must refuse: not a string, empty, too long, or holding U+0000 or a lone surrogate."""
    if not isinstance(item_id, str):
        return True
    return not 0 < len(item_id) <= MAX_ID_CHARS or "\x00" in item_id or has_surrogate(item_id)


def addressable(item_id: Any) -> bool:
    """Whether a URL can name the id. Not with a lone surrogate (a URL is UTF-8), nor with "%": Starlette's
    TestClient decodes a path twice ("%2541" reaches the app as "A"; a real server decodes it once)."""
    return isinstance(item_id, str) and bool(item_id) and not has_surrogate(item_id) and "%" not in item_id


def item_path(base: str, item_id: str) -> str:
    """The item's URL, every character but letters and digits escaped ("." too: ".." must not be a dot segment)."""
    return f"{base}/items/" + quote(item_id, safe="").replace(".", "%2E")


def expected_code(value: Any) -> bytes | None:
    """The code a wire value stands for (models.bits: 4 hex digits, else base64; or 16 ints 0/1, bit j in byte
    j // 8 from the least significant bit), or None when it must be refused."""
    if isinstance(value, list):
        if len(value) != N_BITS or any(type(b) not in (int, float) or b not in (0, 1) for b in value):
            return None  # 1.0 is the JSON number 1 (JSON Schema's integer), true is not
        value = [int(b) for b in value]
        return bytes(sum(value[8 * i + j] << j for j in range(8)) for i in range(N_BITS // 8))
    if not isinstance(value, str):
        return None
    if re.fullmatch(f"[0-9a-fA-F]{{{N_BITS // 4}}}", value):
        return bytes.fromhex(value)
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == N_BITS // 8 else None


def distance(a: bytes, b: bytes) -> int:
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).bit_count()


def _equal(have: Any, want: Any) -> bool:
    """Filter equality: true is not 1, "1" is not 1, 1 is 1.0; containers never match."""
    if isinstance(have, bool) or isinstance(want, bool):
        return type(have) is type(want) and have == want
    if have is None or want is None:
        return have is None and want is None
    if isinstance(have, str) or isinstance(want, str):
        return isinstance(have, str) and isinstance(want, str) and have == want
    return isinstance(have, int | float) and have == want


def matches(metadata: Any, where: dict[str, Any]) -> bool:
    return isinstance(metadata, dict) and all(key in metadata and _equal(metadata[key], v) for key, v in where.items())


@dataclass(frozen=True)
class Stored:
    """What an item should read back as: its code and its metadata (as sent; None is stored as {})."""

    code: bytes
    metadata: Any

    @property
    def text(self) -> str:
        return canon({} if self.metadata is None else self.metadata)


# ---- the app ----------------------------------------------------------------------------------------------------


@dataclass
class Http:
    """Requests with the admin key; every answer is checked to be 2xx or a typed 4xx."""

    client: TestClient
    names: Iterator[int] = field(default_factory=itertools.count)

    def send(self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json") -> Any:
        headers = dict(AUTH) if body is None else {**AUTH, "content-type": content_type}
        resp = self.client.request(method, path, content=body, headers=headers)
        check_typed(resp)
        return resp

    def post(self, path: str, value: Any) -> httpx.Response:
        return self.send("POST", path, to_json(value).encode())

    def collection(self) -> str:
        """A new empty named collection's path prefix."""
        name = f"p{next(self.names)}"
        assert self.post("/v1/collections", {"name": name}).status_code == 201
        return f"/v1/collections/{name}"

    def get_item(self, base: str, item_id: str) -> Stored | None:
        resp = self.send("GET", item_path(base, item_id))
        if resp.status_code in (404, 422):  # 422: an id that could never be stored
            return None
        assert resp.status_code == 200, resp.text[:300]
        body = body_of(resp)
        assert body["id"] == item_id, (body["id"], item_id)
        assert expected_code(body["code"]) is not None, body["code"]
        return Stored(expected_code(body["code"]), body["metadata"])

    def dump(self, base: str) -> dict[str, tuple[int, str]]:
        """Every item of the collection: id -> (distance to the zero code, metadata as canonical JSON)."""
        resp = self.post(f"{base}/search", {"queries": [{"code": "0" * (N_BITS // 4)}], "k": MAX_K})
        assert resp.status_code == 200, resp.text[:300]
        hits = body_of(resp)["results"][0]
        found = {hit["id"]: (hit["distance"], canon(hit["metadata"])) for hit in hits}
        assert len(found) == len(hits), "an id appears twice in one result"
        return found


def check_holds(http: Http, base: str, model: dict[str, Stored]) -> None:
    """The collection holds exactly the model: no item lost, added or changed."""
    found = http.dump(base)
    assert set(found) == set(model), (
        f"extra: {sorted(set(found) - set(model))!r}, lost: {sorted(set(model) - set(found))!r}"
    )
    for item_id, stored in model.items():
        assert found[item_id] == (distance(stored.code, bytes(N_BITS // 8)), stored.text), item_id


@pytest.fixture(scope="module")
def http(text_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Http]:
    root = tmp_path_factory.mktemp("properties")
    settings = settings_for(text_model_dir, root, api_keys=f"{ADMIN_KEY} admin", batch_max_wait_ms=0, max_k=MAX_K)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:  # a 500 comes back as one
        wait_ready(client.app, timeout=60)
        yield Http(client)


# ---- strategies -------------------------------------------------------------------------------------------------

NASTY_CHARS = ["\x00", "\ud800", "\udfff", "\ufffd", "\uffff", "\U0001f600", "é", "/", "%", "?", "#", ".", "\\"]
chars = st.characters(exclude_categories=()) | st.sampled_from([*NASTY_CHARS, '"', " ", "\n", "\u202e"])


def strings(min_size: int = 0, max_size: int = 6) -> st.SearchStrategy[str]:
    return st.text(chars, min_size=min_size, max_size=max_size)


PLAIN_IDS = ["victim", "v", "a", "b", "ключ", "\U0001f600", "a/b", "/a", "..", "a?b#c"]
# ids that a layer cut short and so reached another id: SQLite's JSON functions end a string at U+0000, and the
# router's path pattern ended a path at a line break ("victim\n" deleted "victim")
CUT_IDS = ["victim\x00zzz", "victim\x00", "v\x00a", "v\x00b", "\x00", "victim\n", "v\na", "\n"]
OTHER_IDS = [
    "\ud800",
    "a\udfff",
    "",
    "x" * (MAX_ID_CHARS - 1),
    "y" * MAX_ID_CHARS,
    "z" * (MAX_ID_CHARS + 1),
    "w" * 5000,
]
plain_ids = st.sampled_from(PLAIN_IDS)
# no "%" (see addressable): a test reads every id it stored back through its URL
item_ids = plain_ids | st.sampled_from(CUT_IDS) | st.sampled_from(OTHER_IDS) | strings(1, 4).filter(addressable)
BIG_INTS = [2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 10**30, -(10**40)]
scalars = st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(BIG_INTS) | st.floats() | strings()
KEYS = ["", "n", "s", "d", "\x00", "a\x00b", "\ud800", "ключ", "\U0001f511", "$", ".", '"', "\\", "a.b", "$.x"]
keys = st.sampled_from(KEYS) | strings(0, 4)
values = st.recursive(
    scalars, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(keys, kids, max_size=3), max_leaves=6
)
deep = st.builds(Deep, st.sampled_from([30, 64, 65, 200, 256, 300, 900, 2000, 3000]), st.sampled_from(["list", "dict"]))
NASTY_METADATA = [{"s": "\ud800"}, {"\ud800": 1}, {"n": 2**70}, {"f": float("nan")}]
too_large = st.just(20_000).map(lambda n: {"big": "x" * n})  # over HAMDEX_MAX_METADATA_BYTES (a short repr)
plain_metadata = st.dictionaries(st.sampled_from(["n", "s"]), st.integers(-2, 2) | st.booleans() | st.just("1"))
metadata = (
    st.none()
    | plain_metadata
    | st.dictionaries(keys, values | deep, min_size=1, max_size=3)
    | st.sampled_from(NASTY_METADATA)
    | too_large
)


def wire(raw: bytes, form: str) -> Any:
    if form == "bits":
        return [(raw[j // 8] >> (j % 8)) & 1 for j in range(8 * len(raw))]
    if form == "base64":
        return base64.b64encode(raw).decode()
    return raw.hex().upper() if form == "HEX" else raw.hex()


def one_bad_bit(raw: bytes, index: int, value: Any) -> list[Any]:
    bits = wire(raw, "bits")
    bits[index] = value
    return bits


code_bytes = st.binary(min_size=N_BITS // 8, max_size=N_BITS // 8)
valid_codes = st.builds(wire, code_bytes, st.sampled_from(["hex", "HEX", "base64", "bits"]))
bit_values = st.sampled_from([True, False, "1", "0", 1.0, 0.0, 2, -1, None, [1]])
nasty_codes = (
    st.builds(one_bad_bit, code_bytes, st.integers(0, N_BITS - 1), bit_values)
    | st.lists(st.sampled_from([0, 1]), min_size=N_BITS - 1, max_size=N_BITS + 1)
    | strings(0, 6)
    | st.sampled_from(["", "zzzz", "abc", "abcde", "AAA=", "AAA", "AA==", "١٢٣٤", "０１２３", " ab ", "00 0", "abc\n"])
    | scalars
)
codes = valid_codes | nasty_codes
# most items are good, so that the steps meet stored items; then good ids with any metadata; then anything
plain_items = st.fixed_dictionaries({"id": plain_ids, "code": valid_codes}, optional={"metadata": plain_metadata})
machine_items = st.one_of(
    plain_items,
    plain_items,
    st.fixed_dictionaries({"id": plain_ids, "code": valid_codes, "metadata": metadata}),
    st.fixed_dictionaries({"id": item_ids, "code": codes}, optional={"metadata": plain_metadata | metadata}),
)
TEXTS = [" ".join(words[:4]) for words in TOPICS.values()] + ["goal", "", "\x00", "goal \ud800", "é à ü"]


@st.composite
def bulk_lines(draw: st.DrawFn) -> tuple[bytes, tuple[Any, str, Any] | None]:
    """One NDJSON line and, when it is a row that may be stored, its (id, text, metadata)."""
    if draw(st.integers(0, 2)):
        row = {"id": draw(st.one_of(plain_ids, plain_ids, item_ids, scalars)), "input": draw(st.sampled_from(TEXTS))}
        if draw(st.booleans()):
            row["metadata"] = draw(plain_metadata | metadata)
        candidate = (row["id"], row["input"], row.get("metadata"))
        return to_json(row).encode(), candidate if isinstance(row["id"], str) else None
    big = 10**30
    bad: list[tuple[bytes, tuple[Any, str, Any] | None]] = [
        (b"not json", None),
        (b"[1, 2]", None),
        (b"{}", None),
        (b'{"id": "a"}', None),
        (b'{"id": "a", "input": "goal", "extra": 1}', None),
        (b"\xff\xfe", None),
        (b'{"id": "a", "input": [1.0, 2.0]}', None),
        (b'{"id": "a", "input": "goal", "input_b64": "AAAA"}', None),
        (b'{"id": 5, "input": "goal"}', None),
        (b'{"id": "a", "input": "goal", "metadata": []}', None),
        (b'{"id": "n", "input": "goal", "metadata": {"x": NaN}}', None),
        (b'{"id": "big", "input": "goal", "metadata": {"x": %d}}' % big, ("big", "goal", {"x": big})),
        (b'{"id": "\\u0000", "input": "goal"}', ("\x00", "goal", None)),
        (b'{"id": "\\ud800", "input": "goal"}', ("\ud800", "goal", None)),
    ]
    return draw(st.sampled_from(bad))


# ---- the state machine ------------------------------------------------------------------------------------------


class ItemsMachine(RuleBasedStateMachine):
    """Upserts, deletes, gets, bulk uploads and searches on a fresh named collection, against a model dict."""

    http: Http  # set by the test
    encoded: dict[str, bytes | None]  # TEXTS -> the code /v1/encode gives, None when it refuses the text

    def __init__(self) -> None:
        super().__init__()
        self.base = self.http.collection()
        self.model: dict[str, Stored] = {}

    def teardown(self) -> None:
        assert self.http.send("DELETE", self.base).status_code == 200

    def _known_ids(self) -> st.SearchStrategy[str]:
        return st.sampled_from(sorted(self.model)) | item_ids if self.model else item_ids

    @invariant()
    def holds_the_model(self) -> None:
        check_holds(self.http, self.base, self.model)

    @rule(items=st.lists(machine_items, min_size=1, max_size=3))
    def upsert(self, items: list[dict[str, Any]]) -> None:
        resp = self.http.post(f"{self.base}/items", {"items": items})
        event(f"upsert: {outcome(resp)}")
        ids = [it["id"] for it in items]
        must_refuse = any(bad_id(i) or expected_code(it["code"]) is None for i, it in zip(ids, items, strict=True))
        if resp.status_code != 200:
            return
        assert not must_refuse, f"accepted {to_json(items)[:300]}"
        # an id twice in one upsert: the later item stays, counted as two upserts in turn would be
        updated = sum(i in self.model or i in ids[:n] for n, i in enumerate(ids))
        assert body_of(resp) == {"upserted": len(ids), "inserted": len(ids) - updated, "updated": updated}
        for it in items:
            self.model[it["id"]] = Stored(expected_code(it["code"]), it.get("metadata"))
            if addressable(it["id"]):
                self._reads_back(it["id"])

    def _reads_back(self, item_id: str) -> None:
        got, want = self.http.get_item(self.base, item_id), self.model[item_id]
        assert got is not None and got.code == want.code and got.text == want.text, (item_id, got, want)

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        item_id = data.draw(self._known_ids().filter(addressable))
        resp = self.http.send("DELETE", item_path(self.base, item_id))
        if item_id in self.model:
            assert resp.status_code == 200 and body_of(resp) == {"deleted": item_id}, resp.text[:300]
            del self.model[item_id]
        else:
            assert resp.status_code in (404, 422), resp.text[:300]

    @rule(data=st.data())
    def get(self, data: st.DataObject) -> None:
        item_id = data.draw(self._known_ids().filter(addressable))
        if item_id in self.model:
            self._reads_back(item_id)
        else:
            assert self.http.send("GET", item_path(self.base, item_id)).status_code in (404, 422)

    @rule(lines=st.lists(bulk_lines(), min_size=1, max_size=4))
    def bulk(self, lines: list[tuple[bytes, tuple[Any, str, Any] | None]]) -> None:
        resp = self.http.send(
            "POST", f"{self.base}/items:bulk", b"\n".join(ln for ln, _ in lines), "application/x-ndjson"
        )
        report = body_of(resp)
        # 2xx only when every row was written; else 422 rows_skipped, the report, the good rows written all the same
        assert (resp.status_code, report.get("error_type")) == (
            (200, None) if not report["skipped"] else (422, "rows_skipped")
        ), resp.text[:300]
        event(f"bulk: {'some' if report['items'] else 'no'} rows stored")
        assert report["items"] + report["skipped"] == len(lines), report
        rows: dict[str, list[Stored]] = {}
        for _, candidate in lines:
            if candidate is not None and self.encoded.get(candidate[1]) is not None and not bad_id(candidate[0]):
                rows.setdefault(candidate[0], []).append(Stored(self.encoded[candidate[1]], candidate[2]))
        for item_id in {c[0] for _, c in lines if c is not None and addressable(c[0])}:
            self._bulk_result(item_id, rows.get(item_id, []), last_only=report["skipped"] == 0)

    def _bulk_result(self, item_id: str, rows: list[Stored], last_only: bool) -> None:
        """The item is as before the upload, or as one of its good rows (the last one when none was skipped)."""
        before, got = self.model.get(item_id), self.http.get_item(self.base, item_id)
        assert got is not None or before is None, f"a bulk upload removed {item_id!r}"
        if got is None:
            return
        same = [row for row in rows if (row.code, row.text) == (got.code, got.text)]
        unchanged = before is not None and (before.code, before.text) == (got.code, got.text)
        assert same or unchanged, f"{item_id!r} holds {got} after a bulk upload of {rows}"
        if last_only and rows:
            assert (rows[-1].code, rows[-1].text) == (got.code, got.text), item_id
        self.model[item_id] = same[-1] if same else before

    @rule(data=st.data())
    def search(self, data: st.DataObject) -> None:
        query, k = data.draw(code_bytes), data.draw(st.sampled_from([1, 2, 5, MAX_K]))
        radius = data.draw(st.none() | st.integers(0, N_BITS))
        where = data.draw(self._filters())
        request: dict[str, Any] = {"queries": [{"code": query.hex()}], "k": k, "radius": radius, "filter": where}
        resp = self.http.post(f"{self.base}/search", request)
        event(f"search: {outcome(resp)}")
        if any(isinstance(v, list | dict) for v in (where or {}).values()):
            assert resp.status_code == 422, f"accepted filter {to_json(where)}"
        if resp.status_code != 200:
            return
        expected = sorted(
            distance(query, s.code)
            for s in self.model.values()
            if matches(s.metadata or {}, where or {}) and (radius is None or distance(query, s.code) <= radius)
        )
        hits = body_of(resp)["results"][0]
        assert [h["distance"] for h in hits] == expected[:k], (to_json(request), hits)
        assert len({h["id"] for h in hits}) == len(hits)
        for hit in hits:
            stored = self.model[hit["id"]]
            assert hit["distance"] == distance(query, stored.code) and canon(hit["metadata"]) == stored.text, hit
            assert matches(stored.metadata or {}, where or {}), (hit, where)

    def _filters(self) -> st.SearchStrategy[dict[str, Any] | None]:
        """A filter on a field an item has (so that something matches), or any filter."""
        fields = [(k, v) for s in self.model.values() if isinstance(s.metadata, dict) for k, v in s.metadata.items()]
        scalar = [(k, v) for k, v in fields if not isinstance(v, list | dict | Deep)]
        present = st.sampled_from(scalar).map(lambda kv: {kv[0]: kv[1]}) if scalar else st.nothing()
        return st.none() | present | st.dictionaries(keys, values, max_size=2)


def test_items_behave_like_a_dict(http: Http) -> None:
    """Every step answers 2xx or a typed 4xx; the collection holds exactly what was acknowledged, byte for byte."""
    encoded = {}
    for text in TEXTS:
        resp = http.post("/v1/encode", {"inputs": [text]})
        encoded[text] = expected_code(body_of(resp)["codes"][0]) if resp.status_code == 200 else None
    ItemsMachine.http, ItemsMachine.encoded = http, encoded
    run_state_machine_as_test(ItemsMachine, settings=settings(PROFILE, max_examples=25, stateful_step_count=10))


# ---- single requests --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch(http: Http) -> str:
    return http.collection()


@settings(PROFILE, max_examples=60)
@given(code=codes)
def test_codes_read_back_or_are_refused(http: Http, scratch: str, code: Any) -> None:
    """A code is stored and searched as models.bits documents it; anything else (true, "1", 1.0 as a bit, wrong
    lengths, other types) is refused."""
    want = expected_code(code)
    stored = http.post(f"{scratch}/items", {"items": [{"id": "probe", "code": code}]})
    searched = http.post(f"{scratch}/search", {"queries": [{"code": code}], "k": 1})
    if want is None:
        assert stored.status_code == 422 and searched.status_code == 422, (to_json(code), stored.text, searched.text)
        return
    assert stored.status_code == 200 and searched.status_code == 200, (to_json(code), stored.text, searched.text)
    assert http.get_item(scratch, "probe") == Stored(want, {})
    assert body_of(searched)["results"][0][0]["distance"] == 0


NUMBERS = [0, 1, 5, N_BITS, N_BITS + 1, MAX_K, MAX_K + 1, -1, True, False, 1.0, 5.0, 5.5, "5", None, 2**64, [1], {}]
ABSENT = object()
numbers = st.sampled_from([ABSENT, *NUMBERS])


def whole(value: Any) -> bool:
    """A JSON integer: 5 or 5.0 (one number in JSON and in the API document's JSON Schema), not true."""
    return type(value) is int or (type(value) is float and value.is_integer())


@settings(PROFILE, max_examples=60)
@given(k=numbers, radius=numbers, include_metadata=numbers)
def test_search_numbers_are_strict(http: Http, scratch: str, k: Any, radius: Any, include_metadata: Any) -> None:
    """k and radius are JSON integers in range (5 or 5.0, not true or "5"); include_metadata a boolean."""
    request: dict[str, Any] = {"queries": [{"code": "0000"}]}
    for name, value in (("k", k), ("radius", radius), ("include_metadata", include_metadata)):
        if value is not ABSENT:
            request[name] = value
    valid = (
        (k is ABSENT or (whole(k) and 1 <= k <= MAX_K))
        and (radius is ABSENT or radius is None or (whole(radius) and 0 <= radius <= N_BITS))
        and (include_metadata is ABSENT or type(include_metadata) is bool)
    )
    resp = http.post(f"{scratch}/search", request)
    assert resp.status_code == (200 if valid else 422), (to_json(request), resp.text[:300])


FILTER_METADATA = [
    {"n": 1},
    {"n": 1.0},
    {"n": True},
    {"n": "1"},
    {"n": None},
    {"s": "a\x00b"},
    {"s": "a"},
    {"big": 2**70},
    {"big": -(2**63) - 1},
    {"ключ": "значение", "\U0001f511": 0},
    {"": 0, "$": 1, ".": 2, "a.b": 3, '"': 4, "\\": 5},
    {"a\x00b": 1},
    {"n": [1], "d": {"n": 1}},
    {},
]


@pytest.fixture(scope="module")
def filtered(http: Http) -> tuple[str, dict[str, Stored]]:
    """A collection of items whose metadata filters may trip on, and its model (items refused are left out)."""
    base, model = http.collection(), {}
    for i, meta in enumerate(FILTER_METADATA):
        code = bytes([i, 255 - i])
        if (
            http.post(f"{base}/items", {"items": [{"id": f"f{i}", "code": code.hex(), "metadata": meta}]}).status_code
            == 200
        ):
            model[f"f{i}"] = Stored(code, meta)
    check_holds(http, base, model)
    return base, model


filter_values = st.sampled_from([v for meta in FILTER_METADATA for v in meta.values()]) | scalars | values
filter_keys = st.sampled_from([k for meta in FILTER_METADATA for k in meta]) | keys


@settings(PROFILE, max_examples=80)
@given(where=st.dictionaries(filter_keys, filter_values, max_size=3), radius=st.none() | st.integers(0, N_BITS))
def test_filters_select_exactly(http: Http, filtered: tuple[str, dict[str, Stored]], where: Any, radius: Any) -> None:
    """A filter of scalars is answered with exactly the items whose fields equal them (true is not 1, "1" is not 1);
    a filter with a list or object value is refused."""
    base, model = filtered
    request = {"queries": [{"code": "0000"}], "k": MAX_K, "filter": where, "radius": radius}
    resp = http.post(f"{base}/search", request)
    if any(isinstance(v, list | dict) for v in where.values()):
        assert resp.status_code == 422, to_json(where)
        return
    if resp.status_code != 200:
        return
    zero = bytes(N_BITS // 8)
    want = {
        i
        for i, s in model.items()
        if matches(s.metadata, where) and distance(s.code, zero) <= (N_BITS if radius is None else radius)
    }
    got = {hit["id"] for hit in body_of(resp)["results"][0]}
    assert got == want, (to_json(request), sorted(got), sorted(want))


json_values = st.recursive(
    scalars | deep, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(keys, kids, max_size=3), max_leaves=8
)
item_like = st.fixed_dictionaries(
    {"id": item_ids | scalars | st.sampled_from(["%00", "%41"]), "code": codes},
    optional={"metadata": metadata | values},
)
bodies = (
    json_values
    | st.fixed_dictionaries({"items": st.lists(item_like | json_values, max_size=3)})
    | st.fixed_dictionaries(
        {
            "queries": st.lists(
                st.dictionaries(st.sampled_from(["id", "code", "input"]), json_values, max_size=2), max_size=2
            )
        },
        optional={"filter": json_values, "k": json_values},
    )
    | st.fixed_dictionaries({"inputs": st.lists(json_values, max_size=3)})
)


@settings(PROFILE, max_examples=80)
@given(
    route=st.sampled_from(["items", "search", "encode"]), default=st.booleans(), body=bodies | st.binary(max_size=40)
)
def test_any_body_is_answered_and_changes_only_its_items(
    http: Http, scratch: str, route: str, default: bool, body: Any
) -> None:
    """Any body, JSON or not, gets 2xx or a typed 4xx; a write changes no item but those it names."""
    base = "/v1" if default else scratch
    path = "/v1/encode" if route == "encode" else f"{base}/{route}"
    before = http.dump(base)
    raw = body if isinstance(body, bytes) else to_json(body).encode()
    resp = http.send("POST", path, raw)
    after = http.dump(base)
    items = body.get("items") if isinstance(body, dict) else None
    named = (
        {it.get("id") for it in items if isinstance(it, dict) and isinstance(it.get("id"), str)}
        if isinstance(items, list)
        else set()
    )
    changed = {i for i in before.keys() | after.keys() if before.get(i) != after.get(i)}
    assert changed <= (named if route == "items" and resp.status_code == 200 else set()), (
        sorted(changed),
        resp.text[:200],
    )


@settings(PROFILE, max_examples=40)
@given(
    values=st.lists(
        st.sampled_from([f"Bearer {ADMIN_KEY}", "Bearer nope-nope-nope-nope", "", "Basic x", f"bearer {ADMIN_KEY}"]),
        max_size=2,
    )
)
def test_authorization_headers_read_alike(http: Http, scratch: str, values: list[str]) -> None:
    """The fast search path and the routes read Authorization headers alike; two of them are refused."""
    headers = [("authorization", v) for v in values] + [("content-type", "application/json")]
    fast = http.client.post(f"{scratch}/search", content=b'{"queries":[{"code":"0000"}]}', headers=headers)
    routed = http.client.post(
        f"{scratch}/search", content=b'{"queries":[{"code":"0000"}],"radius":16}', headers=headers
    )
    for resp in (fast, routed):
        check_typed(resp)
    assert fast.status_code == routed.status_code, (values, fast.text, routed.text)
    if len(values) > 1:
        assert fast.status_code == 400, (values, fast.text)
