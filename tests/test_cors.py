"""CORS (service.cors): off by default; with HAMDEX_CORS_ORIGINS a preflight from a listed origin is answered
before any key check, and responses (errors included) carry the headers a browser needs; other origins get none."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import MakeClient
from tests.helpers import KEYS, READER, bearer

ORIGIN = "https://app.example"
PREFLIGHT = {
    "Origin": ORIGIN,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


def test_off_by_default(make_client: MakeClient, dense_model_dir: Path) -> None:
    client = make_client(dense_model_dir, api_keys=KEYS)
    resp = client.options("/v1/search", headers=PREFLIGHT)
    assert "access-control-allow-origin" not in resp.headers
    resp = client.get("/livez", headers={"Origin": ORIGIN})
    assert "access-control-allow-origin" not in resp.headers


def test_preflight_and_responses_for_a_listed_origin(make_client: MakeClient, dense_model_dir: Path) -> None:
    client = make_client(dense_model_dir, api_keys=KEYS, cors_origins=f"{ORIGIN}, https://other.example/")
    resp = client.options("/v1/search", headers=PREFLIGHT)  # no key: browsers send none on a preflight
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in resp.headers["access-control-allow-methods"]
    assert "authorization" in resp.headers["access-control-allow-headers"].lower()
    assert resp.headers["access-control-max-age"] == "600"

    body = {"queries": [{"code": "0000"}]}
    resp = client.post("/v1/search", json=body, headers={"Origin": ORIGIN, **bearer(READER)})
    assert resp.status_code == 200 and resp.headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in resp.headers["access-control-expose-headers"].lower()
    resp = client.post("/v1/search", json=body, headers={"Origin": ORIGIN})  # an error a browser can read
    assert resp.status_code == 401 and resp.headers["access-control-allow-origin"] == ORIGIN


def test_an_unlisted_origin_gets_no_grant(make_client: MakeClient, dense_model_dir: Path) -> None:
    client = make_client(dense_model_dir, cors_origins=ORIGIN)
    resp = client.options("/v1/search", headers={**PREFLIGHT, "Origin": "https://evil.example"})
    assert resp.status_code == 400 and "access-control-allow-origin" not in resp.headers
    resp = client.get("/livez", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in resp.headers
