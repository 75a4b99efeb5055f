// The hamdex search page (served at /ui by service/routes/ui.py). Plain JavaScript, no framework and no build
// step: it calls the REST API of the server it came from (docs/api.md) and draws what comes back. Nothing here
// writes data; every value from the server reaches the page as text (textContent), never as HTML.
"use strict";

const KEY_STORE = "hamdex.apiKey"; // sessionStorage: kept while the tab is open, gone when it closes
const COLLECTION_STORE = "hamdex.collection";
const $ = (id) => document.getElementById(id);

const state = {
  info: null, // GET /info: the default model
  collections: [], // GET /v1/collections
  collection: null, // the picked collection's entry
  results: null, // the last search: {query, queryBits, hits, bits: Map id -> bits}
};

// ---- the API ---------------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

// One request; the error body {"error", "error_type"} of every refusal becomes an ApiError.
async function request(method, path, body) {
  const headers = { Accept: "application/json" };
  const key = sessionStorage.getItem(KEY_STORE);
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    // relative paths: "v1/search" from /ui is /v1/search, also behind a proxy that adds a path prefix
    resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiError(0, "network", `the server did not answer (${err.message})`);
  }
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!resp.ok) {
    const type = data && typeof data.error_type === "string" ? data.error_type : `http_${resp.status}`;
    const message = data && typeof data.error === "string" ? data.error : text || resp.statusText;
    const err = new ApiError(resp.status, type, message);
    err.sentKey = key; // which key was refused (null: none was sent)
    throw err;
  }
  return data;
}

// A request that asks for the key on a 401 and tries again with it (every waiting call shares one prompt).
async function call(method, path, body) {
  for (;;) {
    try {
      return await request(method, path, body);
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 401) throw err;
      if (sessionStorage.getItem(KEY_STORE) !== err.sentKey) continue; // a new key came meanwhile: try it
      await askKey(err);
    }
  }
}

const collectionPath = (name) => `v1/collections/${encodeURIComponent(name)}`;
const itemPath = (name, id) => `${collectionPath(name)}/items/${encodeURIComponent(id)}`;

// ---- the API key -----------------------------------------------------------------------------------------

let keyWaiters = null; // resolvers of the calls waiting for a key, while the form is shown

function askKey(err) {
  if (err.sentKey) showError($("key-error"), err); // a key was sent and refused: say why
  sessionStorage.removeItem(KEY_STORE);
  $("key-form").hidden = false;
  $("key-input").focus();
  return new Promise((resolve) => {
    keyWaiters = keyWaiters || [];
    keyWaiters.push(resolve);
  });
}

function useKey(event) {
  event.preventDefault();
  const key = $("key-input").value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY_STORE, key);
  $("key-input").value = "";
  $("key-error").hidden = true;
  $("key-form").hidden = true;
  const waiters = keyWaiters || [];
  keyWaiters = null;
  if (waiters.length) waiters.forEach((resolve) => resolve());
  else load(); // a key changed from the header button: read everything again with it
}

// ---- errors ----------------------------------------------------------------------------------------------

function showError(box, err) {
  box.replaceChildren();
  const type = document.createElement("strong");
  type.className = "error-type";
  type.textContent = err.type || "error";
  box.append(type);
  if (err.status) box.append(` (${err.status})`);
  box.append(`: ${err.message}`);
  box.hidden = false;
}

function report(err) {
  console.warn("hamdex:", err); // a warning, not an error: the API's refusals are the page working as meant
  showError($("error"), err instanceof ApiError ? err : new ApiError(0, "page", String(err.message || err)));
}

function clearError() {
  $("error").hidden = true;
}

// ---- codes -----------------------------------------------------------------------------------------------

// Bit j of a code is bit j % 8 (least significant first) of byte j // 8 (docs/api.md, "Codes on the wire").
function bytesToBits(bytes) {
  const bits = [];
  for (const byte of bytes) for (let j = 0; j < 8; j++) bits.push((byte >> j) & 1);
  return bits;
}

function bitsToHex(bits) {
  let hex = "";
  for (let i = 0; i < bits.length; i += 8) {
    let byte = 0;
    for (let j = 0; j < 8; j++) byte |= (bits[i + j] || 0) << j;
    hex += byte.toString(16).padStart(2, "0");
  }
  return hex;
}

// A code as the API reads it: hex of the right length, else base64; null when it is neither.
function wireToBits(text, nBits) {
  const code = text.trim();
  if (code.length === nBits / 4 && /^[0-9a-fA-F]+$/.test(code)) {
    return bytesToBits(code.match(/../g).map((pair) => parseInt(pair, 16)));
  }
  try {
    const raw = atob(code);
    return raw.length * 8 === nBits ? bytesToBits(Array.from(raw, (c) => c.charCodeAt(0))) : null;
  } catch {
    return null;
  }
}

const SVG = "http://www.w3.org/2000/svg";

// A code as a strip of bits: dark 1, light 0, a small gap every 8 bits; bits that differ from ``against`` (the
// query's code) are drawn in the accent colour, so a hit's distance can be seen.
function bitStrip(bits, against) {
  const svg = document.createElementNS(SVG, "svg");
  const width = bits.length + Math.floor((bits.length - 1) / 8) * 0.4;
  svg.setAttribute("viewBox", `0 0 ${width} 1`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("class", "bits");
  svg.setAttribute("role", "img");
  const differ = against ? bits.filter((b, j) => b !== against[j]).length : null;
  const label = document.createElementNS(SVG, "title");
  label.textContent = `${bits.length} bits: ${bitsToHex(bits)}` + (differ === null ? "" : `, ${differ} differ from the query`);
  svg.append(label);
  bits.forEach((bit, j) => {
    const rect = document.createElementNS(SVG, "rect");
    rect.setAttribute("x", String(j + Math.floor(j / 8) * 0.4));
    rect.setAttribute("y", "0");
    rect.setAttribute("width", "0.86");
    rect.setAttribute("height", "1");
    const changed = against && against[j] !== bit;
    rect.setAttribute("class", `bit b${bit}${changed ? " diff" : ""}`);
    svg.append(rect);
  });
  return svg;
}

function legend() {
  const swatch = (cls, text) => el("span", {}, el("span", { class: `swatch ${cls}` }), text);
  return el("span", { class: "legend muted" }, swatch("b1", "1"), swatch("b0", "0"), swatch("diff", "differs from the query"));
}

// ---- small DOM helpers -----------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

const show = (value) => (typeof value === "string" ? value : JSON.stringify(value));

function facts(dl, pairs) {
  dl.replaceChildren();
  for (const [name, value] of pairs) {
    if (value === undefined) continue;
    dl.append(el("dt", {}, name), el("dd", {}, value instanceof Node ? value : show(value)));
  }
}

function metadataChips(meta) {
  const box = el("div", { class: "chips" });
  if (!meta || !Object.keys(meta).length) return box;
  for (const [name, value] of Object.entries(meta)) {
    const text = `${name}: ${show(value)}`;
    box.append(el("span", { class: "chip", title: text }, text.length > 60 ? `${text.slice(0, 57)}...` : text));
  }
  return box;
}

// ---- collections and the query box -----------------------------------------------------------------------

// What the picked collection's model takes: known when its fingerprint is the default model's (/info describes
// that one); otherwise the user says (the kind picker), since the API does not describe named models' inputs.
function modelKind() {
  const known = state.info && state.collection && state.collection.fingerprint === state.info.fingerprint;
  return known ? INPUT_BOX[state.info.featurizer] || "text" : $("input-kind").value;
}

// The query box for each featurizer kind (/info's "featurizer"); a kind this page does not know takes text.
const INPUT_BOX = { text: "text", sentence: "text", pixels: "pixels", dense: "dense" };

function renderCollections() {
  const select = $("collection");
  select.replaceChildren();
  for (const c of state.collections) {
    select.append(el("option", { value: c.name }, `${c.name} (${c.count} items)`));
  }
  const wanted = sessionStorage.getItem(COLLECTION_STORE);
  const pick = state.collections.find((c) => c.name === wanted) || state.collections[0] || null;
  if (pick) select.value = pick.name;
  pickCollection(pick);
  $("search-button").disabled = !pick; // disabled until there is a collection to search
}

function pickCollection(collection) {
  state.collection = collection;
  if (!collection) {
    $("collection-info").textContent = "no collection";
    return;
  }
  sessionStorage.setItem(COLLECTION_STORE, collection.name);
  $("collection-info").textContent =
    `${collection.n_bits} bits · ${collection.index_kind} · model ${collection.model}`;
  const known = state.info && collection.fingerprint === state.info.fingerprint;
  $("kind-picker").hidden = known;
  renderQueryBox();
}

function mode() {
  return document.querySelector('input[name="mode"]:checked').value;
}

function renderQueryBox() {
  const kind = modelKind();
  $("mode-input-label").textContent = { text: "Text", pixels: "Image", dense: "Vector" }[kind] || "Input";
  for (const box of document.querySelectorAll("[data-mode]")) {
    box.hidden = box.dataset.mode !== mode() || (box.dataset.kind !== undefined && box.dataset.kind !== kind);
  }
  const dim = inputDim();
  $("vector-hint").textContent = dim ? `The model takes ${dim} numbers.` : "";
  if (kind === "pixels" && !$("image-shape").value && dim) $("image-shape").value = guessShape(dim);
}

function inputDim() {
  const known = state.info && state.collection && state.collection.fingerprint === state.info.fingerprint;
  return known ? state.info.input_dim : null;
}

// Images reach the API as their pixel values 0-255 (h * w * c of them); /info gives only their count, so the
// shape is guessed: a square grey image, else a square colour one (3 * s * s is never a square).
function guessShape(dim) {
  const side = Math.round(Math.sqrt(dim));
  if (side * side === dim) return `${side}x${side}x1`;
  const colour = Math.round(Math.sqrt(dim / 3));
  if (3 * colour * colour === dim) return `${colour}x${colour}x3`;
  return "";
}

function parseShape() {
  const match = $("image-shape").value.trim().match(/^(\d+)\s*[x×]\s*(\d+)(?:\s*[x×]\s*([1-4]))?$/);
  if (!match) throw new ApiError(0, "page", "give the image size as WIDTHxHEIGHT or WIDTHxHEIGHTxCHANNELS, e.g. 28x28x1");
  return { width: Number(match[1]), height: Number(match[2]), channels: Number(match[3] || 1) };
}

let droppedImage = null; // an ImageBitmap of the last dropped or chosen file

async function takeImage(file) {
  if (!file || !file.type.startsWith("image/")) {
    report(new ApiError(0, "page", "drop an image file (PNG, JPEG, ...)"));
    return;
  }
  try {
    droppedImage = await createImageBitmap(file);
  } catch (err) {
    report(new ApiError(0, "page", `cannot read the image: ${err.message}`));
    return;
  }
  clearError();
  imagePixels(); // draws the preview
}

// The dropped image scaled to the model's size, as a flat list of h * w * c values 0-255 (row-major, channels
// last), the layout the pixel featurizer reads (models/featurizers.py).
function imagePixels() {
  if (!droppedImage) throw new ApiError(0, "page", "drop or choose an image first");
  const { width, height, channels } = parseShape();
  const canvas = $("preview");
  canvas.width = width;
  canvas.height = height;
  canvas.hidden = false;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.fillStyle = $("invert").checked ? "#fff" : "#000"; // transparent parts: the background
  ctx.fillRect(0, 0, width, height);
  ctx.drawImage(droppedImage, 0, 0, width, height);
  const rgba = ctx.getImageData(0, 0, width, height).data;
  const values = [];
  for (let i = 0; i < rgba.length; i += 4) {
    let [r, g, b] = [rgba[i], rgba[i + 1], rgba[i + 2]];
    if ($("invert").checked) [r, g, b] = [255 - r, 255 - g, 255 - b];
    if (channels === 1 || channels === 2) values.push(Math.round(0.299 * r + 0.587 * g + 0.114 * b));
    else values.push(r, g, b);
    if (channels === 2 || channels === 4) values.push(rgba[i + 3]);
    const grey = Math.round(0.299 * r + 0.587 * g + 0.114 * b);
    const shown = channels === 1 || channels === 2 ? [grey, grey, grey] : [r, g, b];
    rgba[i] = shown[0];
    rgba[i + 1] = shown[1];
    rgba[i + 2] = shown[2];
    rgba[i + 3] = 255;
  }
  ctx.putImageData(new ImageData(rgba, width, height), 0, 0);
  return values;
}

function parseVector(text) {
  const trimmed = text.trim();
  if (!trimmed) throw new ApiError(0, "page", "paste a vector first");
  let values;
  if (trimmed.startsWith("[")) {
    try {
      values = JSON.parse(trimmed);
    } catch (err) {
      throw new ApiError(0, "page", `the vector is not a JSON array: ${err.message}`);
    }
  } else {
    values = trimmed.split(/[\s,;]+/).filter(Boolean).map(Number);
  }
  if (!Array.isArray(values) || !values.every((v) => typeof v === "number" && Number.isFinite(v))) {
    throw new ApiError(0, "page", "the vector must hold numbers only");
  }
  return values;
}

// The query of the form: {input} | {id} | {code}, and a label for the summary line.
function readQuery() {
  const m = mode();
  if (m === "id") {
    const id = $("query-id").value;
    if (!id) throw new ApiError(0, "page", "type the id of a stored item");
    return { query: { id }, label: `item ${id}` };
  }
  if (m === "code") {
    const code = $("query-code").value.trim();
    if (!code) throw new ApiError(0, "page", "type a code (hex or base64)");
    return { query: { code }, label: `code ${code}` };
  }
  const kind = modelKind();
  if (kind === "pixels") return { query: { input: imagePixels() }, label: "the image" };
  if (kind === "dense") {
    const vector = parseVector($("query-vector").value);
    return { query: { input: vector }, label: `a vector of ${vector.length} numbers` };
  }
  const text = $("query-text").value;
  if (!text.trim()) throw new ApiError(0, "page", "type a text first");
  return { query: { input: text }, label: `“${text.length > 80 ? `${text.slice(0, 77)}...` : text}”` };
}

function readFilter() {
  const text = $("filter").value.trim();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ApiError(0, "page", `the filter is not JSON: ${err.message}`);
  }
}

// ---- search ----------------------------------------------------------------------------------------------

const MAX_STRIPS = 100; // hits whose code is drawn: search hits carry no code, so each costs a GET of the item
const bitsCache = new Map(); // "collection\u0000id" -> a promise of the bits; emptied by each new search

function getBits(name, id) {
  const key = `${name}\u0000${id}`;
  if (!bitsCache.has(key)) {
    const bits = call("GET", `${itemPath(name, id)}?format=bits`).then((item) => item.code);
    bits.catch(() => bitsCache.delete(key)); // a failure is not kept
    bitsCache.set(key, bits);
  }
  return bitsCache.get(key);
}

// The query's own code, to draw above the hits and to mark the bits each hit differs in.
async function queryBits(query, collection) {
  if (query.id !== undefined) return getBits(collection.name, query.id);
  if (query.code !== undefined) return wireToBits(query.code, collection.n_bits);
  if (state.info && collection.fingerprint === state.info.fingerprint) {
    const encoded = await call("POST", "v1/encode", { inputs: [query.input], format: "bits" });
    return encoded.codes[0];
  }
  return null; // a named model's input: /v1/encode speaks for the default model only
}

async function search(query, label) {
  const collection = state.collection;
  if (!collection) throw new ApiError(0, "page", "no collection to search");
  const body = { queries: [query], k: Number($("k").value) || 10, include_metadata: true };
  const filter = readFilter();
  if (filter !== null) body.filter = filter;
  if ($("rerank").checked) body.rerank = { candidates: Number($("candidates").value) || 100 };
  clearError();
  $("search-button").disabled = true;
  const started = performance.now();
  try {
    const answer = await call("POST", `${collectionPath(collection.name)}/search`, body);
    bitsCache.clear(); // codes may have changed since the last search
    const ms = performance.now() - started;
    const bits = await queryBits(query, collection).catch(() => null); // after the search: its error comes first
    state.results = { collection: collection.name, label, query, queryBits: bits, hits: answer.results[0], ms };
    if (location.hash && location.hash !== "#/") location.hash = "#/"; // from the item view: hashchange draws
    else renderResults();
  } finally {
    $("search-button").disabled = !state.collection;
  }
}

function renderResults() {
  const r = state.results;
  if (!r) return;
  const summary = $("query-summary");
  const n = r.hits.length;
  summary.replaceChildren(
    el("div", {}, `${n} ${n === 1 ? "hit" : "hits"} for ${r.label} in `, el("strong", {}, r.collection), ` (${r.ms.toFixed(0)} ms)`),
    r.queryBits
      ? el("div", { class: "strip query" }, el("span", { class: "muted" }, "query code"), bitStrip(r.queryBits), legend())
      : null,
  );
  const tbody = $("hits");
  tbody.replaceChildren();
  r.hits.forEach((hit, i) => {
    const strip = el("td", { class: "code-col" }, el("span", { class: "muted" }, "…"));
    const row = el(
      "tr",
      { class: "hit", "data-id": hit.id, title: "Search by this item" },
      el("td", { class: "muted" }, String(i + 1)),
      el(
        "td",
        { class: "id" },
        el("a", { href: "#", class: "search-by" }, hit.id),
        typeof hit.score === "number" ? el("div", { class: "score muted" }, `score ${hit.score.toFixed(4)}`) : null,
      ),
      el("td", { class: "distance" }, String(hit.distance)),
      strip,
      el("td", {}, metadataChips(hit.metadata)),
      el("td", {}, el("a", { href: `#/item/${encodeURIComponent(r.collection)}/${encodeURIComponent(hit.id)}`, class: "open-item" }, "item ›")),
    );
    row.addEventListener("click", (event) => {
      if (event.target.closest(".open-item")) return; // the item link navigates
      event.preventDefault();
      searchById(hit.id);
    });
    tbody.append(row);
    if (i >= MAX_STRIPS) {
      strip.replaceChildren(el("span", { class: "muted" }, "not drawn"));
      return;
    }
    getBits(r.collection, hit.id).then(
      (bits) => strip.replaceChildren(bitStrip(bits, r.queryBits)),
      (err) => strip.replaceChildren(el("span", { class: "muted" }, err.type || "error")),
    );
  });
  $("no-hits").hidden = n > 0;
  $("results").hidden = false;
}

function searchById(id) {
  document.querySelector('input[name="mode"][value="id"]').checked = true;
  $("query-id").value = id;
  renderQueryBox();
  search({ id }, `item ${id}`).catch(report);
}

// ---- views: search, item, model card ---------------------------------------------------------------------

function showView(name) {
  for (const view of ["search", "item", "model"]) $(`${view}-view`).hidden = view !== name;
  $("tab-search").classList.toggle("active", name === "search");
  $("tab-model").classList.toggle("active", name === "model");
}

async function route() {
  const hash = location.hash || "#/";
  const item = hash.match(/^#\/item\/([^/]+)\/(.+)$/);
  try {
    if (item) {
      showView("item");
      await renderItem(decodeURIComponent(item[1]), decodeURIComponent(item[2]));
    } else if (hash === "#/model") {
      showView("model");
      await renderModel();
    } else {
      showView("search");
    }
  } catch (err) {
    report(err);
  }
}

async function renderItem(name, id) {
  $("item-title").textContent = id;
  $("item-facts").replaceChildren();
  $("item-strip").replaceChildren();
  $("item-metadata").replaceChildren();
  const item = await call("GET", `${itemPath(name, id)}?format=bits`);
  clearError();
  const collection = state.collections.find((c) => c.name === name);
  facts($("item-facts"), [
    ["collection", name],
    ["code (hex)", el("code", {}, bitsToHex(item.code))],
    ["bits", String(item.code.length)],
    ["model", collection ? collection.model : undefined],
  ]);
  $("item-strip").replaceChildren(bitStrip(item.code));
  const meta = item.metadata || {};
  const keys = Object.keys(meta);
  if (!keys.length) $("item-metadata").append(el("p", { class: "muted" }, "none"));
  else {
    const dl = el("dl", { class: "facts" });
    facts(dl, keys.map((k) => [k, typeof meta[k] === "object" && meta[k] !== null ? el("pre", {}, JSON.stringify(meta[k], null, 2)) : meta[k]]));
    $("item-metadata").append(dl);
  }
  $("item-search").onclick = () => {
    if (state.collection && state.collection.name !== name) {
      $("collection").value = name;
      pickCollection(state.collections.find((c) => c.name === name) || state.collection);
    }
    searchById(id);
  };
}

async function renderModel() {
  const info = state.info || (state.info = await call("GET", "info"));
  const c = state.collection;
  const same = c && c.fingerprint === info.fingerprint;
  $("model-note").textContent = same || !c
    ? "The model of the default collection (GET /info)."
    : `GET /info describes the default model; collection ${c.name} uses model ${c.model} (fingerprint ${c.fingerprint}).`;
  facts($("model-facts"), [
    ["fingerprint", el("code", {}, info.fingerprint)],
    ["bits", String(info.n_bits)],
    ["bottleneck", info.bottleneck],
    ["members", String(info.members)],
    ["featurizer", info.featurizer],
    ["input size", String(info.input_dim)],
    ["index kind", info.index_kind],
    ["items (default collection)", String(info.count)],
    ["device", info.device],
  ]);
  if (c) {
    facts($("collection-facts"), [
      ["name", c.name],
      ["model", c.model],
      ["fingerprint", el("code", {}, c.fingerprint)],
      ["bits", String(c.n_bits)],
      ["index kind", c.index_kind],
      ["index parameters", Object.keys(c.index_params || {}).length ? c.index_params : "defaults"],
      ["items", String(c.count)],
      ["backend", c.backend],
    ]);
  }
  facts($("versions"), Object.entries(info.versions || {}));
  $("report-none").hidden = !!info.training;
  $("report").replaceChildren(info.training ? reportTable(info.training) : "");
  $("plots").replaceChildren(...(info.training ? qualityPlots(info.training) : []));
}

// The training report (models/train.py training_report) as nested tables: scalars as rows, objects as
// sub-tables, an object of objects (the safeguard's candidates) as one table with a row each.
function reportTable(value) {
  const table = el("table", { class: "report" });
  for (const [name, v] of Object.entries(value)) {
    let cell;
    if (v !== null && typeof v === "object" && !Array.isArray(v)) {
      const rows = Object.values(v);
      cell = rows.length && rows.every((r) => r && typeof r === "object" && !Array.isArray(r)) ? gridTable(v) : reportTable(v);
    } else if (Array.isArray(v)) {
      cell = v.length ? el("ul", {}, ...v.map((x) => el("li", {}, show(x)))) : el("span", { class: "muted" }, "none");
    } else {
      cell = v === null ? el("span", { class: "muted" }, "—") : show(v);
    }
    table.append(el("tr", {}, el("th", {}, name.replaceAll("_", " ")), el("td", {}, cell)));
  }
  return table;
}

function gridTable(rows) {
  const columns = [...new Set(Object.values(rows).flatMap((r) => Object.keys(r)))];
  return el(
    "table",
    { class: "grid" },
    el("tr", {}, el("th", {}, ""), ...columns.map((c) => el("th", {}, c.replaceAll("_", " ")))),
    ...Object.entries(rows).map(([name, r]) => el("tr", {}, el("th", {}, name), ...columns.map((c) => el("td", {}, r[c] === undefined ? "" : show(r[c]))))),
  );
}

// Quality plots drawn from the report's numbers (the service serves no image of its own): the code health of
// the shipped model, and each candidate's probe mAP when the safeguard compared them.
function qualityPlots(training) {
  const plots = [];
  const health = training.code_health;
  if (health) {
    plots.push(barPlot("Code health (0 to 1)", [
      ["bit balance (0 best)", health.bit_balance],
      ["mean |bit correlation| (0 best)", health.mean_abs_bit_correlation],
      ["distinct codes (1 best)", health.distinct_code_fraction],
    ]));
  }
  const candidates = training.safeguard && training.safeguard.candidates;
  if (candidates && typeof candidates === "object") {
    const bars = Object.entries(candidates)
      .filter(([, c]) => c && typeof c.probe_map === "number")
      .map(([name, c]) => [name + (name === training.safeguard.shipped ? " (shipped)" : ""), c.probe_map]);
    if (bars.length) plots.push(barPlot("Probe mAP of each candidate", bars));
  }
  return plots;
}

function barPlot(title, bars) {
  const rowH = 22, labelW = 210, plotW = 240, pad = 6;
  const svg = document.createElementNS(SVG, "svg");
  const height = bars.length * rowH + pad * 2;
  svg.setAttribute("viewBox", `0 0 ${labelW + plotW + 60} ${height}`);
  svg.setAttribute("class", "plot");
  svg.setAttribute("role", "img");
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    svg.append(node);
  };
  add("title", {}, title);
  const max = Math.max(1, ...bars.map(([, v]) => v || 0));
  bars.forEach(([label, value], i) => {
    const y = pad + i * rowH;
    add("text", { x: labelW - 8, y: y + rowH * 0.68, "text-anchor": "end", class: "plot-label" }, label);
    add("rect", { x: labelW, y: y + 4, width: plotW, height: rowH - 8, class: "plot-track" });
    add("rect", { x: labelW, y: y + 4, width: Math.max(0, (value || 0) / max) * plotW, height: rowH - 8, class: "plot-bar" });
    add("text", { x: labelW + plotW + 6, y: y + rowH * 0.68, class: "plot-value" }, value === null || value === undefined ? "—" : value.toFixed(3));
  });
  return el("figure", {}, el("figcaption", {}, title), svg);
}

// ---- start -----------------------------------------------------------------------------------------------

async function load() {
  clearError();
  try {
    state.info = await call("GET", "info");
    const listed = await call("GET", "v1/collections");
    state.collections = listed.collections;
    for (const bad of listed.unavailable || []) {
      report(new ApiError(0, bad.error_type, `collection ${bad.name} cannot be opened: ${bad.error}`));
    }
  } catch (err) {
    if (err instanceof ApiError && err.type === "not_ready") {
      showError($("error"), new ApiError(503, "not_ready", "the model is still loading; trying again"));
      setTimeout(load, 1000);
      return;
    }
    report(err);
    return;
  }
  renderCollections();
  await route();
}

function start() {
  $("key-form").addEventListener("submit", useKey);
  $("key-button").addEventListener("click", () => {
    $("key-form").hidden = !$("key-form").hidden;
    if (!$("key-form").hidden) $("key-input").focus();
  });
  $("key-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    $("key-error").hidden = true;
  });
  $("collection").addEventListener("change", (event) => {
    pickCollection(state.collections.find((c) => c.name === event.target.value));
    state.results = null;
    $("results").hidden = true;
    route();
  });
  $("input-kind").addEventListener("change", renderQueryBox);
  for (const radio of document.querySelectorAll('input[name="mode"]')) radio.addEventListener("change", renderQueryBox);
  $("query-form").addEventListener("submit", (event) => {
    event.preventDefault();
    try {
      const { query, label } = readQuery();
      search(query, label).catch(report);
    } catch (err) {
      report(err);
    }
  });
  $("query-text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("query-form").requestSubmit();
  });
  $("query-vector").addEventListener("input", () => {
    const dim = inputDim();
    try {
      const n = parseVector($("query-vector").value).length;
      $("vector-hint").textContent = dim ? `${n} of the ${dim} numbers the model takes.` : `${n} numbers.`;
    } catch {
      $("vector-hint").textContent = dim ? `The model takes ${dim} numbers.` : "";
    }
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    takeImage(event.dataTransfer.files[0]);
  });
  $("file").addEventListener("change", (event) => takeImage(event.target.files[0]));
  for (const id of ["image-shape", "invert"]) {
    $(id).addEventListener("change", () => {
      if (droppedImage) {
        try {
          imagePixels();
        } catch (err) {
          report(err);
        }
      }
    });
  }
  window.addEventListener("hashchange", () => {
    if (!location.hash || location.hash === "#/") renderResults();
    route();
  });
  load();
}

start();
