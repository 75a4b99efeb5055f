"""Verification after a restart: the server, read back over HTTP, against the client's model of the expected state.

(a) every acknowledged write is reflected exactly (GET /v1/items/{id} for every id in the pool: the latest
    acknowledged upsert's code and metadata, acknowledged deletes absent);
(b) the write in flight at the kill (at most one: the client writes one request at a time) is wholly applied or
    wholly absent;
(c) no search returns an id twice; on exact index kinds a search with k >= the live count returns exactly the
    live ids with their metadata and true distances, and a radius-0 search by each of a sample of codes returns
    exactly the ids holding that code; /info's count equals the number of live ids expected.
"""

from __future__ import annotations

import httpx

from tests.crash.model import Model, State, Tally, Write


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def fetch_items(client: httpx.Client, ids: list[str], tally: Tally) -> tuple[State, set[str]]:
    """GET each id: ({id: (code, metadata)} of those present, ids whose GET failed (counted as corrupted))."""
    found: State = {}
    failed: set[str] = set()
    for item_id in ids:
        resp = client.get(f"/v1/items/{item_id}")
        if resp.status_code == 200:
            body = resp.json()
            found[item_id] = (body["code"], body["metadata"])
        elif resp.status_code != 404:
            failed.add(item_id)
            tally.problem("corrupted", f"GET {item_id}: HTTP {resp.status_code} {resp.text[:200]}")
    return found, failed


def resolve_pending(w: Write, before: State, server: State) -> str:
    """'applied', 'absent' or 'torn' for the write in flight at the kill, given the expected state before it."""
    if w.kind == "delete":
        new = {w.id: None}
    else:
        new = dict(w.items)
    matches_new = [server.get(i) == v for i, v in new.items()]
    matches_old = [server.get(i) == before.get(i) for i in new]
    if all(matches_new):
        return "applied"
    if all(matches_old):
        return "absent"
    return "torn"


def verify(
    url: str,
    model: Model,
    pending: Write | None,
    tally: Tally,
    *,
    exact: bool,
    range_search: bool,
    sample: int,
    label: str,
) -> str | None:
    """Check the restarted server against the model (resolving ``pending`` first); adopt what the server holds
    so that one inconsistency is counted once. Returns the pending write's outcome, if there was one."""
    outcome = None
    with httpx.Client(base_url=url, timeout=60) as client:
        server, unknown = fetch_items(client, model.pool, tally)  # unknown: GET failed (already counted)
        torn: set[str] = set()
        if pending is not None:
            outcome = resolve_pending(pending, model.state, server)
            if outcome == "applied":
                tally.in_flight_applied += 1
                model.apply(pending)
            elif outcome == "absent":
                tally.in_flight_absent += 1
            else:
                tally.problem("corrupted", f"{label}: write {pending.n} ({pending.describe()}) half applied")
                torn = set(pending.items) | {pending.id}
        for item_id in model.pool:
            want, got = model.state.get(item_id), server.get(item_id)
            if want == got or item_id in unknown:
                continue
            if item_id in torn:
                pass  # counted above
            elif _is_older_state(model, item_id, got):
                tally.lost_writes.add(model.last_write[item_id])
                tally.problem("lost", f"{label}: {item_id} expected {want}, server has {got}")
            else:
                tally.problem("corrupted", f"{label}: {item_id} expected {want}, server has {got} (unknown state)")
            if got is None:  # adopt the server's state: each inconsistency is counted once
                model.state.pop(item_id, None)
            else:
                model.state[item_id] = got
        count = client.get("/info").json()["count"]
        if count != len(model.state):
            tally.problem("corrupted", f"{label}: /info count {count}, expected {len(model.state)} live ids")
        check_searches(client, model, tally, exact=exact, range_search=range_search, sample=sample, label=label)
    return outcome


def _is_older_state(model: Model, item_id: str, got: tuple[str, dict] | None) -> bool:
    """Whether what the server holds for ``item_id`` is a state an earlier write gave it (so a newer one is lost)."""
    if item_id not in model.last_write:
        return False  # never acknowledged-written: nothing can be lost there
    if got is None:
        return True  # the item's first upsert (or a later one) is gone
    w = got[1].get("w") if isinstance(got[1], dict) else None
    return isinstance(w, int) and w < model.last_write[item_id]


def check_searches(
    client: httpx.Client, model: Model, tally: Tally, *, exact: bool, range_search: bool, sample: int, label: str
) -> None:
    """No duplicate hits anywhere; on exact kinds a full top-k and radius-0 searches by a sample of codes."""
    live = model.state
    max_k = 1000
    rng = model.rng
    live_ids = sorted(live)
    sample_ids = [live_ids[i] for i in rng.permutation(len(live_ids))[:sample]]
    queries = [live[i][0] for i in sample_ids]
    if exact and 0 < len(live) <= max_k:
        q = rng.bytes(model.n_bytes).hex()
        hits = post_search(client, {"queries": [{"code": q}], "k": max_k}, tally, label)
        if hits is not None:
            _check_hits(hits[0], live, tally, label, f"k={max_k}", q)
            if {h["id"] for h in hits[0]} != set(live):
                missing, extra = set(live) - {h["id"] for h in hits[0]}, {h["id"] for h in hits[0]} - set(live)
                tally.problem(
                    "corrupted", f"{label}: full search misses {sorted(missing)[:5]}, extra {sorted(extra)[:5]}"
                )
    if not queries:
        return
    if exact and range_search:
        body = {"queries": [{"code": c} for c in queries], "k": max_k, "radius": 0}
        results = post_search(client, body, tally, label)
        for c, hits in zip(queries, results or [], strict=True):
            _check_hits(hits, live, tally, label, "radius 0", c)
            want = {i for i, (code, _) in live.items() if code == c}
            if {h["id"] for h in hits} != want:
                tally.problem(
                    "corrupted", f"{label}: radius-0 search for {c} gave {[h['id'] for h in hits]}, want {want}"
                )
    else:
        results = post_search(client, {"queries": [{"code": c} for c in queries], "k": 10}, tally, label)
        for c, hits in zip(queries, results or [], strict=True):
            _check_hits(hits, live, tally, label, "k=10", c)


def post_search(client: httpx.Client, body: dict, tally: Tally, label: str) -> list[list[dict]] | None:
    resp = client.post("/v1/search", json=body)
    if resp.status_code != 200:
        tally.problem("corrupted", f"{label}: search HTTP {resp.status_code} {resp.text[:200]}")
        return None
    return resp.json()["results"]


def _check_hits(hits: list[dict], live: State, tally: Tally, label: str, what: str, query: str) -> None:
    ids = [h["id"] for h in hits]
    if len(ids) != len(set(ids)):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        tally.problem("corrupted", f"{label}: {what} search returned {dup[:5]} twice")
    for h in hits:
        want = live.get(h["id"])
        if want is None:
            tally.problem("corrupted", f"{label}: {what} search returned {h['id']}, which is not live")
        elif h["metadata"] != want[1] or h["distance"] != hamming(query, want[0]):
            tally.problem("corrupted", f"{label}: {what} hit {h} does not match {want}")
