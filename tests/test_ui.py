"""The search page at /ui (issue 23), in headless Chromium: Playwright from PyPI drives Debian's chromium (it cannot
download a browser of its own), started by the tests against a real server with API keys. The page loads with no
console errors, a search shows the API's hits, a click on a hit searches by it, an item view opens, the model card
shows the training report, and a wrong key shows the error. Image and vector queries run on pixel and dense models.

With HAMDEX_UI_SCREENSHOTS=1 the tests also write the README's screenshots to docs/img/ui-*.png (never in CI by
default, so that a run does not rewrite tracked files)."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from hamdex.models import checkpoint
from hamdex.models.train import TrainConfig, fit_hasher
from hamdex.service.app import create_app
from hamdex.service.routes.ui import FILES
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from tests.conftest import TOPICS, dense_vectors, digit_images, settings_for
from tests.helpers import ADMIN, KEYS, READER, WRITER, bearer, server_thread

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "docs" / "img" if os.environ.get("HAMDEX_UI_SCREENSHOTS") == "1" else None
CHROMIUM = shutil.which("chromium")
VIEWPORT = {"width": 1200, "height": 800}
expect.set_options(timeout=15_000)  # a loaded CI machine: Playwright's 5 s default is short for a search
UNAUTHORIZED_LOAD = "the server responded with a status of 401"  # Chromium's console line for a refused fetch


# ---- the static shell (no browser) ----------------------------------------------------------------------------


def mixed_texts(n_per_topic: int = 15, seed: int = 0) -> tuple[list[str], list[str]]:
    """Short texts of one topic's words with a few of another's (so that codes and distances vary), and topics."""
    rng = np.random.default_rng(seed)
    names = list(TOPICS)
    texts, topics = [], []
    for t, topic in enumerate(names):
        for _ in range(n_per_topic):
            other = names[(t + 1 + rng.integers(3)) % len(names)]
            words = [*rng.choice(TOPICS[topic], size=rng.integers(3, 7)), *rng.choice(TOPICS[other], rng.integers(4))]
            rng.shuffle(words)
            texts.append(" ".join(words))
            topics.append(topic)
    return texts, topics


@pytest.fixture(scope="module")
def keyed_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server with API keys whose default collection holds 60 short texts on four topics, and a second, named
    collection; its 32-bit model is trained here (about a second), longer than conftest's, for varied codes."""
    tmp = tmp_path_factory.mktemp("ui")
    texts, topics = mixed_texts()
    hasher, _ = fit_hasher(
        texts, "text", {"n_bits": 32, "hidden": (64,)}, TrainConfig(epochs=40, progress=False, seed=0, device="cpu")
    )
    checkpoint.save(tmp / "model", hasher)
    with server_thread(create_app(settings_for(tmp / "model", tmp, api_keys=KEYS))) as url:
        items = [
            {"id": f"{topic}/{i % 15:02d}", "input": text, "metadata": {"topic": topic, "words": len(text.split())}}
            for i, (topic, text) in enumerate(zip(topics, texts, strict=True))
        ]
        resp = httpx.post(f"{url}/v1/items", json={"items": items}, headers=bearer(WRITER))
        assert resp.status_code == 200, resp.text
        resp = httpx.post(f"{url}/v1/collections", json={"name": "notes"}, headers=bearer(ADMIN))
        assert resp.status_code == 201, resp.text
        notes = [{"id": "note-1", "input": "rocket launch orbit", "metadata": {"source": "ui test"}}]
        resp = httpx.post(f"{url}/v1/collections/notes/items", json={"items": notes}, headers=bearer(WRITER))
        assert resp.status_code == 200, resp.text
        yield url


def test_the_shell_loads_without_a_key_with_a_same_origin_policy(keyed_url: str) -> None:
    resp = httpx.get(f"{keyed_url}/ui")
    assert resp.status_code == 200 and resp.headers["content-type"] == "text/html; charset=utf-8"
    csp = resp.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "script-src 'self'" in csp
    assert "http" not in csp and "*" not in csp and "unsafe" not in csp  # no remote origin, no inline script
    assert resp.headers["x-content-type-options"] == "nosniff"
    for name, media_type in FILES.items():
        resp = httpx.get(f"{keyed_url}/ui/{name}")
        assert resp.status_code == 200 and resp.headers["content-type"] == media_type, name
        assert resp.content == (ROOT / "service" / "ui" / name).read_bytes()


@pytest.mark.parametrize(
    "path", ["/ui/app.py", "/ui/..%2Froutes%2Fui.py", "/ui/%2e%2e%2f%2e%2e%2fpyproject.toml", "/ui/../app.py"]
)
def test_only_the_listed_files_are_served(keyed_url: str, path: str) -> None:
    resp = httpx.get(f"{keyed_url}{path}")
    assert resp.status_code == 404 and resp.json()["error_type"] == "not_found", resp.text


def test_the_page_is_not_in_the_api_document(keyed_url: str) -> None:
    document = httpx.get(f"{keyed_url}/openapi.json", headers=bearer(READER)).json()
    assert not [path for path in document["paths"] if path.startswith("/ui")]


def test_the_files_name_no_other_origin() -> None:
    """Air-gapped: no URL in the page's files but the SVG namespace (a name, never fetched)."""
    folder = ROOT / "service" / "ui"
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)  # the allow-list is the folder
    for name in FILES:
        urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.\w+[^\s\"')]*", (folder / name).read_text()))
        assert urls <= {"http://www.w3.org/2000/svg"}, (name, urls)


def test_the_wheel_holds_the_page(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path]
    subprocess.run(cmd, check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("hamdex-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"hamdex/service/ui/{name}" for name in FILES} <= names


# ---- in the browser -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if CHROMIUM is None:  # in CI a skip fails the run (tests/ci_skips.py): .ci/run installs chromium
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        yield browser
        browser.close()


class Page:
    """A page in a fresh browser context (its own sessionStorage) that records console errors and uncaught
    exceptions; ``key`` is put in sessionStorage first, as if typed into the tab before."""

    def __init__(self, browser, key: str | None = None) -> None:
        self.context = browser.new_context(viewport=VIEWPORT)
        if key is not None:
            self.context.add_init_script(f"sessionStorage.setItem('hamdex.apiKey', {key!r})")
        self.page = self.context.new_page()
        self.page.set_default_timeout(15_000)
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def shot(self, name: str) -> None:
        if SHOTS is not None:
            self.page.screenshot(path=str(SHOTS / f"ui-{name}.png"))


@pytest.fixture
def reader_page(browser) -> Iterator[Page]:
    page = Page(browser, key=READER)
    yield page
    page.context.close()


def api_hits(url: str, query: dict, k: int = 10) -> list[tuple[str, int]]:
    resp = httpx.post(f"{url}/v1/search", json={"queries": [query], "k": k}, headers=bearer(READER))
    assert resp.status_code == 200, resp.text
    return [(hit["id"], hit["distance"]) for hit in resp.json()["results"][0]]


def shown_hits(page) -> list[tuple[str, int]]:
    rows = page.locator("tr.hit")
    return [
        (rows.nth(i).get_attribute("data-id"), int(rows.nth(i).locator("td.distance").inner_text()))
        for i in range(rows.count())
    ]


def wait_for_strips(page, n: int) -> None:
    """Each hit's code drawn (fetched per hit: search hits carry no code)."""
    expect(page.locator("tr.hit svg.bits")).to_have_count(n)


def test_a_search_shows_the_hits_and_a_click_searches_by_one(keyed_url: str, reader_page: Page) -> None:
    page = reader_page.page
    page.goto(f"{keyed_url}/ui")
    expect(page.locator("#collection option")).to_have_count(2)
    assert page.locator("#collection").input_value() == "default"
    assert page.locator("#mode-input-label").inner_text() == "Text"  # the model's input kind, from /info

    page.fill("#query-text", "rocket orbit telescope launch")
    page.click("#search-button")
    page.wait_for_selector("tr.hit")
    wait_for_strips(page, 10)
    assert shown_hits(page) == api_hits(keyed_url, {"input": "rocket orbit telescope launch"})
    assert page.locator(".strip.query svg.bits rect").count() == 32  # the query's own code, 32 bits
    assert page.locator("tr.hit").first.locator(".chip").first.inner_text().startswith("topic: ")
    reader_page.shot("search")

    clicked = shown_hits(page)[3][0]
    page.locator("tr.hit").nth(3).locator("td.distance").click()  # a click anywhere on the row
    expect(page.locator("#query-summary")).to_contain_text(f"item {clicked}")
    wait_for_strips(page, 10)
    hits = shown_hits(page)
    assert hits == api_hits(keyed_url, {"id": clicked})
    assert (clicked, 0) in hits and page.locator("#query-id").input_value() == clicked
    assert reader_page.errors == []


def test_an_item_view_opens_and_searches_by_the_item(keyed_url: str, reader_page: Page) -> None:
    page = reader_page.page
    page.goto(f"{keyed_url}/ui")
    page.fill("#query-text", "recipe oven flour butter")
    page.click("#search-button")
    wait_for_strips(page, 10)
    first = shown_hits(page)[0][0]
    page.locator("tr.hit").first.locator("a.open-item").click()
    page.wait_for_selector("#item-view:not([hidden]) #item-facts dd")
    item = httpx.get(f"{keyed_url}/v1/items/{first}", headers=bearer(READER)).json()
    assert page.locator("#item-title").inner_text() == first
    assert item["code"] in page.locator("#item-facts").inner_text()  # hex, as the API gives it
    assert page.locator("#item-strip svg.bits rect").count() == 32
    assert item["metadata"]["topic"] in page.locator("#item-metadata").inner_text()
    reader_page.shot("item")

    page.click("#item-search")
    page.wait_for_selector("#search-view:not([hidden]) tr.hit")
    wait_for_strips(page, 10)
    assert shown_hits(page) == api_hits(keyed_url, {"id": first})
    page.go_back()  # the item view again, from the browser's history
    page.wait_for_selector("#item-view:not([hidden])")
    assert reader_page.errors == []


def test_the_model_card_shows_the_training_report(keyed_url: str, reader_page: Page) -> None:
    page = reader_page.page
    page.goto(f"{keyed_url}/ui#/model")
    page.wait_for_selector("#model-facts dd")
    info = httpx.get(f"{keyed_url}/info", headers=bearer(READER)).json()
    facts = page.locator("#model-facts").inner_text()
    assert info["fingerprint"] in facts and info["featurizer"] in facts
    report = page.locator("#report").inner_text()
    assert "code health" in report and str(info["training"]["steps"]) in report
    assert page.locator("#plots svg.plot").count() >= 1
    assert "torch" in page.locator("#versions").inner_text()
    reader_page.shot("model")
    assert reader_page.errors == []


def test_the_key_is_asked_once_and_a_wrong_one_shows_the_error(keyed_url: str, browser) -> None:
    tab = Page(browser)  # no key yet
    page = tab.page
    try:
        page.goto(f"{keyed_url}/ui")
        page.wait_for_selector("#key-form:not([hidden])")
        assert page.locator("#key-error").is_hidden()  # no key sent yet: nothing was refused

        page.fill("#key-input", "not-a-key-0123456789")
        page.click("#key-form button[type=submit]")
        page.wait_for_selector("#key-error:not([hidden])")
        error = page.locator("#key-error").inner_text()
        assert "unauthorized" in error and "401" in error and "unknown API key" in error, error
        tab.shot("key")

        page.fill("#key-input", READER)
        page.click("#key-form button[type=submit]")
        expect(page.locator("#collection option")).to_have_count(2)
        assert page.locator("#key-form").is_hidden()
        assert page.evaluate("sessionStorage.getItem('hamdex.apiKey')") == READER

        page.reload()  # kept while the tab is open: no second prompt
        expect(page.locator("#collection option")).to_have_count(2)
        assert page.locator("#key-form").is_hidden()
        # the refused requests are logged by Chromium itself; nothing else may be
        assert [e for e in tab.errors if UNAUTHORIZED_LOAD not in e] == []
    finally:
        tab.context.close()


def test_an_api_error_shows_its_type_and_message(keyed_url: str, reader_page: Page) -> None:
    page = reader_page.page
    page.goto(f"{keyed_url}/ui")
    page.check("input[name=mode][value=id]")
    page.fill("#query-id", "no-such-item")
    page.click("#search-button")
    page.wait_for_selector("#error:not([hidden])")
    error = page.locator("#error").inner_text()
    assert "query_id_not_found" in error and "409" in error and "no-such-item" in error, error
    page.check("input[name=mode][value=input]")
    page.fill("#query-text", "goal team")
    page.fill("#filter", "{not json")
    page.click("#search-button")
    expect(page.locator("#error")).to_contain_text("not JSON")
    assert [e for e in reader_page.errors if "status of 409" not in e] == []


# ---- image and vector queries ----------------------------------------------------------------------------------


@pytest.fixture
def open_server(tmp_path: Path) -> Iterator[Callable[[Path, list[dict]], str]]:
    """``serve(model_dir, items)`` -> the URL of a server without keys whose default collection holds ``items``."""
    stack: list = []

    def serve(model_dir: Path, items: list[dict]) -> str:
        context = server_thread(create_app(settings_for(model_dir, tmp_path / f"s{len(stack)}")))
        stack.append(context)
        url = context.__enter__()
        resp = httpx.post(f"{url}/v1/items", json={"items": items})
        assert resp.status_code == 200, resp.text
        return url

    yield serve
    for context in reversed(stack):
        context.__exit__(None, None, None)


def png(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image, "L").save(out, format="PNG")
    return out.getvalue()


def test_a_dropped_image_finds_itself(pixel_model_dir: Path, open_server, browser, tmp_path: Path) -> None:
    images = digit_images(40)  # uint8 (40, 8, 8)
    url = open_server(pixel_model_dir, [{"id": f"digit-{i}", "input": im.tolist()} for i, im in enumerate(images)])
    tab = Page(browser)
    page = tab.page
    try:
        page.goto(f"{url}/ui")
        page.wait_for_selector("#drop:visible")
        assert page.locator("#mode-input-label").inner_text() == "Image"
        assert page.locator("#image-shape").input_value() == "8x8x1"  # guessed from the model's 64 inputs
        page.set_input_files("#file", files=[{"name": "d7.png", "mimeType": "image/png", "buffer": png(images[7])}])
        page.wait_for_selector("#preview:visible")
        page.click("#search-button")
        wait_for_strips(page, 10)
        hits = shown_hits(page)
        assert hits == api_hits(url, {"input": images[7].astype(float).tolist()})
        assert hits[0][1] == 0 and ("digit-7", 0) in hits
        assert tab.errors == []
    finally:
        tab.context.close()


def test_a_pasted_vector_finds_itself(dense_model_dir: Path, open_server, browser) -> None:
    vectors = dense_vectors(30)  # float32 (30, 12)
    url = open_server(dense_model_dir, [{"id": f"v{i}", "input": v.tolist()} for i, v in enumerate(vectors)])
    tab = Page(browser)
    page = tab.page
    try:
        page.goto(f"{url}/ui")
        page.wait_for_selector("#query-vector:visible")
        page.fill("#query-vector", ", ".join(repr(float(x)) for x in vectors[4]))
        assert "12 of the 12 numbers" in page.locator("#vector-hint").inner_text()
        page.click("#search-button")
        wait_for_strips(page, 10)
        hits = shown_hits(page)
        assert hits == api_hits(url, {"input": vectors[4].tolist()})
        assert ("v4", 0) in hits
        assert tab.errors == []
    finally:
        tab.context.close()


def test_a_collection_of_another_model_asks_for_its_input_kind(
    text_model_dir: Path, dense_model_dir: Path, tmp_path: Path, browser
) -> None:
    """/info describes the default model only: for a collection of another model the page lets the user say what
    its inputs are, and draws no query code (/v1/encode speaks for the default model)."""
    shutil.copytree(dense_model_dir, tmp_path / "models" / "dense")
    vectors = dense_vectors(30)
    with server_thread(create_app(settings_for(text_model_dir, tmp_path))) as url:
        resp = httpx.post(f"{url}/v1/collections", json={"name": "vectors", "model": "dense"})
        assert resp.status_code == 201, resp.text
        items = [{"id": f"v{i}", "input": v.tolist()} for i, v in enumerate(vectors)]
        assert httpx.post(f"{url}/v1/collections/vectors/items", json={"items": items}).status_code == 200
        tab = Page(browser)
        page = tab.page
        try:
            page.goto(f"{url}/ui")
            expect(page.locator("#collection option")).to_have_count(2)
            assert page.locator("#kind-picker").is_hidden()  # the default collection: its kind is known
            page.select_option("#collection", "vectors")
            expect(page.locator("#kind-picker")).to_be_visible()
            page.select_option("#input-kind", "dense")
            page.fill("#query-vector", " ".join(repr(float(x)) for x in vectors[9]))
            page.click("#search-button")
            wait_for_strips(page, 10)
            resp = httpx.post(
                f"{url}/v1/collections/vectors/search", json={"queries": [{"input": vectors[9].tolist()}]}
            )
            assert shown_hits(page) == [(h["id"], h["distance"]) for h in resp.json()["results"][0]]
            assert ("v9", 0) in shown_hits(page) and page.locator(".strip.query").count() == 0
            assert tab.errors == []
        finally:
            tab.context.close()


def test_a_reranked_search_shows_the_scores(keyed_url: str, reader_page: Page) -> None:
    page = reader_page.page
    page.goto(f"{keyed_url}/ui")
    page.fill("#query-text", "stock market bond")
    page.check("#rerank")
    page.fill("#candidates", "30")
    page.click("#search-button")
    wait_for_strips(page, 10)
    body = {"queries": [{"input": "stock market bond"}], "k": 10, "rerank": {"candidates": 30}}
    resp = httpx.post(f"{keyed_url}/v1/search", json=body, headers=bearer(READER))
    hits = resp.json()["results"][0]
    assert shown_hits(page) == [(h["id"], h["distance"]) for h in hits]
    assert page.locator("tr.hit .score").first.inner_text() == f"score {hits[0]['score']:.4f}"
    assert reader_page.errors == []
