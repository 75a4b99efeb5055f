"""The limits a server enforces, written into its OpenAPI document, so that what the document calls a valid request
is one the server takes and what it calls invalid one it refuses (issue 25).

Static rules live on the request models (service.schemas: id and name patterns, exactly-one-of groups). What
depends on the server is added here, per app, from the same :class:`~service.settings.Settings` the routes check
and from the checkpoints it serves, read from their ``hamdex.json`` without loading weights:

- batch sizes (``minItems`` 1, ``maxItems`` HAMDEX_MAX_BATCH), ``k`` (1..HAMDEX_MAX_K), ``radius`` (0..n_bits),
  ``bits`` (multiples of 8, 8..n_bits), ``rerank.candidates`` (1..HAMDEX_MAX_RERANK_CANDIDATES), text length
  (HAMDEX_MAX_TEXT_CHARS);
- raw inputs as the model's featurizer takes them (text, ``d`` float32 values, or pixels in [0, 255]) and codes
  of its length (hex, base64 or bits);
- the collection-create body as one branch per backend and index kind, with that kind's parameters and bounds;
- the NDJSON body of the bulk routes, as the array of rows its lines hold, and of the import route (a header line
  of a served model's code length, then rows of codes of that length);
- /v1/reconstruct and /v1/generate: batches, ``n`` (1..HAMDEX_MAX_BATCH), and the default model's inputs, masks
  (null only for a text model) and codes, since these routes use that model only.

The models are those of ``HAMDEX_MODEL_PATH`` and ``HAMDEX_MODELS_DIR`` when the document is first built. When
they differ (inputs or code length), inputs and codes are documented as any of theirs: a collection's own model
decides, which the document cannot tell by path. Not expressible in JSON Schema, and so said in descriptions only:
lone surrogates, metadata size (HAMDEX_MAX_METADATA_BYTES as compact JSON) and depth, a bulk line's bytes, a body's
bytes (413), and that packed vectors' data must match their shape (nor is it said that one batch of pixel inputs
takes one form, flat or rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hamdex.index.kinds import KINDS, PARAM_BOUNDS
from hamdex.index.milvus import INDEX_TYPES, LOCAL_NAME, SERVER_SCHEMES
from hamdex.index.validation import MAX_METADATA_DEPTH
from hamdex.models import checkpoint
from hamdex.models.featurizers import TEXT_INPUT_KINDS
from hamdex.service.schemas import MAX_ID_CHARS, NO_SURROGATES
from hamdex.service.settings import Settings

VECTOR_FEATURIZERS = ("dense", "sentence", "pixels")  # models.rerank.keeps_vectors
FLOAT32_MAX = 3.4028234663852886e38  # larger values become infinite in float32: 422 non_finite
# A bulk row's id holds something besides blanks (service.bulk.job strips it, as a file's): str.isspace's characters,
# spelled out, since JSON Schema's \s is ECMAScript's, another set. All of them are in the BMP.
_BLANKS = "".join(f"\\u{c:04x}" for c in range(0x10000) if chr(c).isspace())
BULK_ID_PATTERN = f"^[^\\u0000]*[^\\u0000{_BLANKS}][^\\u0000]*$"
BASE64_CHAR = "[A-Za-z0-9+/]"
Schema = dict[str, Any]


@dataclass(frozen=True)
class ModelSpec:
    """What a checkpoint takes and gives: its featurizer's inputs and its code length."""

    featurizer: str  # text, dense or pixels (models.featurizers)
    n_bits: int
    input_dim: int
    image_shape: tuple[int, ...] = ()  # pixels: (height, width[, channels])

    @classmethod
    def read(cls, path: Path) -> ModelSpec | None:
        """The spec in ``path``'s ``hamdex.json``; None when there is no readable checkpoint."""
        try:
            meta = checkpoint.read_meta(path)
            config, featurizer = meta["model_config"], meta["featurizer"]
            shape = tuple(featurizer["params"].get("shape", ())) if featurizer["kind"] == "pixels" else ()
            return cls(featurizer["kind"], int(config["n_bits"]), int(config["input_dim"]), shape)
        except (checkpoint.CheckpointError, KeyError, TypeError, ValueError):
            return None


def served_specs(settings: Settings) -> list[ModelSpec]:
    """The distinct specs of the default model and of the named models under HAMDEX_MODELS_DIR."""
    paths = [settings.model_path]
    if settings.models_dir.is_dir():
        paths += sorted(p for p in settings.models_dir.iterdir() if (p / checkpoint.META).is_file())
    specs = [spec for spec in map(ModelSpec.read, paths) if spec is not None]
    return list(dict.fromkeys(specs))


# ---- inputs and codes -----------------------------------------------------------------------------------------


def input_schema(spec: ModelSpec, settings: Settings) -> Schema:
    """One raw input as ``spec``'s featurizer takes it."""
    if spec.featurizer in TEXT_INPUT_KINDS:
        return {"type": "string", "maxLength": settings.max_text_chars}
    if spec.featurizer == "dense":
        value = {"type": "number", "minimum": -FLOAT32_MAX, "maximum": FLOAT32_MAX}
        return _fixed_array(value, spec.input_dim)
    pixel = {"type": "number", "minimum": 0, "maximum": 255}
    forms = [_fixed_array(pixel, spec.input_dim)]
    if len(spec.image_shape) >= 2:  # or as rows: height rows of width (x channels) values
        height = spec.image_shape[0]
        forms.append(_fixed_array(_fixed_array(pixel, spec.input_dim // height), height))
    return _any_of(forms)


def code_schema(n_bits: int) -> Schema:
    """A code of ``n_bits`` as models.bits.from_wire reads it: hex, padded base64, or a list of bits."""
    n_bytes = n_bits // 8
    # without padding (n_bytes a multiple of 3), a base64 string of hex digits only is read as hex, too short
    not_hex = "" if n_bytes % 3 else "(?![0-9a-fA-F]*$)"
    return {
        "anyOf": [
            {"type": "string", "pattern": f"^[0-9a-fA-F]{{{2 * n_bytes}}}$", "description": "hex"},
            {"type": "string", "pattern": f"^{not_hex}{_base64_body(n_bytes)}$", "description": "base64"},
            {**_fixed_array({"type": "integer", "enum": [0, 1]}, n_bits), "description": "bits"},
        ]
    }


def _base64_body(n_bytes: int) -> str:
    """A regular expression of the padded base64 of ``n_bytes`` bytes (no anchors)."""
    groups, rest = divmod(n_bytes, 3)
    tail = {0: "", 1: f"{BASE64_CHAR}{{2}}==", 2: f"{BASE64_CHAR}{{3}}="}[rest]
    return (f"(?:{BASE64_CHAR}{{4}}){{{groups}}}" if groups else "") + tail


def _fixed_array(items: Schema, n: int) -> Schema:
    return {"type": "array", "items": items, "minItems": n, "maxItems": n}


def _any_of(schemas: list[Schema]) -> Schema:
    distinct = list({repr(s): s for s in schemas}.values())
    return distinct[0] if len(distinct) == 1 else {"anyOf": distinct}


# ---- the document ---------------------------------------------------------------------------------------------


def add_limits(document: dict[str, Any], settings: Settings, specs: list[ModelSpec]) -> None:
    """Write ``settings``' limits and ``specs``' inputs and codes into an OpenAPI ``document`` in place."""
    schemas = document["components"]["schemas"]
    batch = {"minItems": 1, "maxItems": settings.max_batch}
    search = schemas["SearchRequest"]["properties"]
    search["queries"].update(batch)
    search["k"].update(minimum=1, maximum=settings.max_k, default=min(search["k"]["default"], settings.max_k))
    radius = {"type": "integer", "minimum": 0}
    if specs:
        radius["maximum"] = max(spec.n_bits for spec in specs)
    search["radius"]["anyOf"] = [radius, {"type": "null"}]
    bits = {"type": "integer", "minimum": 8, "multipleOf": 8}  # a whole-byte prefix (docs/nested.md)
    if specs:
        bits["maximum"] = max(spec.n_bits for spec in specs)
    search["bits"]["anyOf"] = [bits, {"type": "null"}]
    candidates = schemas["Rerank"]["properties"]["candidates"]
    limit = settings.max_rerank_candidates
    candidates.update(minimum=1, maximum=limit, default=min(candidates["default"], limit))
    pool = schemas["Rerank"]["properties"]["pool"]
    pool["anyOf"] = [{"type": "integer", "minimum": 1, "maximum": limit}, {"type": "null"}]
    schemas["ItemsRequest"]["properties"]["items"].update(batch)
    schemas["EncodeRequest"]["properties"]["inputs"].update(batch)
    metadata = schemas["ItemIn"]["properties"]["metadata"]
    metadata["description"] = _metadata_rule(settings)
    if specs:
        _add_model_inputs(schemas, settings, specs)
    _add_decode_limits(schemas, settings, ModelSpec.read(settings.model_path))
    schemas["CreateCollectionRequest"] = _create_request(schemas["CreateCollectionRequest"], settings, specs)
    schemas["BulkRow"] = _bulk_row(settings, specs)
    for path, methods in document["paths"].items():
        if path.endswith("/items:bulk"):
            methods["post"]["requestBody"]["content"]["application/x-ndjson"]["schema"] = _bulk_body(settings)
        if path.endswith("/import"):
            methods["post"]["requestBody"]["content"]["application/x-ndjson"]["schema"] = _import_body(settings, specs)
        if path == "/v1/encode" and specs and all(spec.featurizer in TEXT_INPUT_KINDS for spec in specs):
            for media in ("application/octet-stream", "application/x-npy"):  # binary arrays: 422 input_type
                methods["post"]["requestBody"]["content"].pop(media, None)
    _integer_bounds(document)


def _integer_bounds(node: Any) -> None:
    """Integer schemas' bounds as integers: FastAPI writes some as floats (``"maximum": 65536.0``), and a generator
    may then draw the float 65535.0, which a strict integer field refuses."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            for key in ("minimum", "maximum"):
                if isinstance(node.get(key), float) and node[key].is_integer():
                    node[key] = int(node[key])
        for value in node.values():
            _integer_bounds(value)
    elif isinstance(node, list):
        for value in node:
            _integer_bounds(value)


def _metadata_rule(settings: Settings) -> str:
    return (
        f"At most {settings.max_metadata_bytes} bytes as compact JSON, nested at most {MAX_METADATA_DEPTH} deep. "
        + NO_SURROGATES
    )


def _add_model_inputs(schemas: dict[str, Schema], settings: Settings, specs: list[ModelSpec]) -> None:
    """Inputs and codes as the served models take them; packed vectors only where a model takes vectors."""
    raw = _any_of([input_schema(spec, settings) for spec in specs])
    code = _any_of([code_schema(n) for n in sorted({spec.n_bits for spec in specs})])
    for name in ("ItemIn", "Query"):
        schemas[name]["properties"]["input"] = {**raw, "title": "Input"}
        schemas[name]["properties"]["code"] = {**code, "title": "Code"}
    _item_text_and_vector(schemas["ItemIn"], settings, specs)
    encode = schemas["EncodeRequest"]
    encode["properties"]["inputs"]["items"] = raw
    if all(spec.featurizer in TEXT_INPUT_KINDS for spec in specs):  # a text model refuses vectors (422 input_type)
        del encode["properties"]["inputs_b64"]
        encode.pop("oneOf", None)
        encode["required"] = ["inputs"]
        schemas.pop("PackedVectors", None)
    else:
        packed = schemas["PackedVectors"]["properties"]
        packed["data"]["description"] += " Its length must match the shape (not expressible here)."
        packed["shape"]["description"] += f" At most {settings.max_batch} items."


def _item_text_and_vector(item: Schema, settings: Settings, specs: list[ModelSpec]) -> None:
    """An item's ``text`` where a served model takes texts, its ``vector`` where one takes flat vectors (a dense
    model, or pixels as one row); neither field where no model takes it (the model would refuse it)."""
    properties, vectors = item["properties"], [s for s in specs if s.featurizer not in TEXT_INPUT_KINDS]
    keep = {"input", "code"}
    if any(spec.featurizer in TEXT_INPUT_KINDS for spec in specs):
        properties["text"] = {**properties["text"], "maxLength": settings.max_text_chars}
        keep.add("text")
    if vectors:
        flat = [input_schema(spec, settings) for spec in vectors]
        flat = [schema["anyOf"][0] if "anyOf" in schema else schema for schema in flat]  # pixels: the flat form
        properties["vector"] = {
            **_any_of(flat),
            "title": "Vector",
            "description": properties["vector"].get("description"),
        }
        keep.add("vector")
    for name in ("text", "vector"):
        if name not in keep:
            properties.pop(name, None)
    item["oneOf"] = [branch for branch in item["oneOf"] if branch["required"][0] in keep]


def _add_decode_limits(schemas: dict[str, Schema], settings: Settings, spec: ModelSpec | None) -> None:
    """/v1/reconstruct and /v1/generate: batches, and the default model's inputs, masks and codes (these routes
    use the default model only)."""
    schemas["ReconstructRequest"]["properties"]["items"].update(minItems=1, maxItems=settings.max_batch)
    generate = schemas["GenerateRequest"]["properties"]
    generate["codes"].update(minItems=1, maxItems=settings.max_batch)
    generate["n"]["maximum"] = settings.max_batch
    if spec is None:
        return
    item = schemas["ReconstructItem"]["properties"]
    item["input"] = {**input_schema(spec, settings), "title": "Input"}
    generate["codes"]["items"] = code_schema(spec.n_bits)
    if spec.featurizer in TEXT_INPUT_KINDS:  # null only: a mask is for pixel and dense inputs
        item["mask"] = {"type": "null", "title": "Mask", "description": item["mask"]["description"]}
        return
    flag = {"type": "boolean"}
    forms = [_fixed_array(flag, spec.input_dim)]
    if len(spec.image_shape) >= 2:  # or as rows, as an image input may come
        height = spec.image_shape[0]
        forms.append(_fixed_array(_fixed_array(flag, spec.input_dim // height), height))
    item["mask"] = {"anyOf": [*forms, {"type": "null"}], "title": "Mask", "description": item["mask"]["description"]}


def _create_request(base: Schema, settings: Settings, specs: list[ModelSpec]) -> Schema:
    """The create body: one branch per backend and index kind, each with that kind's parameters. Absent fields
    take their defaults (backend faiss, kind flat), so the faiss flat branch requires neither."""
    n_bits = min((spec.n_bits for spec in specs), default=None)
    branches = []
    for kind in KINDS:
        faiss = {"backend": {"const": "faiss"}, "index_kind": {"const": kind}, "milvus_uri": {"type": "null"}}
        branch = {"properties": {**faiss, "index_params": _index_params(kind, n_bits)}}
        if kind != "flat":
            branch["required"] = ["index_kind"]
        branches.append(branch)
    local = {"type": "string", "pattern": f"^{LOCAL_NAME.pattern}$"}
    server = {"type": "string", "pattern": f"^({'|'.join(sorted(SERVER_SCHEMES))}):"}
    uris = [{"type": "null"}, local, *([server] if settings.milvus_remote_uris else [])]
    milvus = {
        "backend": {"const": "milvus"},
        "index_kind": {"const": "flat"},
        "milvus_uri": {"anyOf": uris},
        "vectors": {"type": "null"},  # milvus keeps no vectors (409 vectors_unsupported)
    }
    branches.append({"properties": {**milvus, "index_params": _index_params("flat", n_bits)}, "required": ["backend"]})
    for kind in INDEX_TYPES if settings.milvus_remote_uris else ():  # milvus-lite builds flat only, a server more
        if kind != "flat":
            remote = {
                "backend": {"const": "milvus"},
                "index_kind": {"const": kind},
                "milvus_uri": server,
                "vectors": {"type": "null"},
            }
            properties = {**remote, "index_params": _index_params(kind, n_bits)}
            branches.append({"properties": properties, "required": ["backend", "index_kind", "milvus_uri"]})
    properties = dict(base["properties"])
    properties["index_kind"] = {**properties["index_kind"], "enum": list(KINDS)}
    properties["milvus_uri"] = {**properties["milvus_uri"], "anyOf": uris}
    if specs and not any(spec.featurizer in VECTOR_FEATURIZERS for spec in specs):  # text models keep no vectors
        properties["vectors"] = {**properties["vectors"], "anyOf": [{"type": "null"}]}
    return {**base, "properties": properties, "oneOf": branches}


def _index_params(kind: str, n_bits: int | None) -> Schema:
    """The parameters ``kind`` takes, each an integer within index.kinds.PARAM_BOUNDS (multihash: nhash <= n_bits)."""
    params = {}
    for name in KINDS[kind].defaults:
        low, high = PARAM_BOUNDS[name]
        if name == "nhash" and n_bits is not None:
            high = min(high, n_bits)
        params[name] = {"type": "integer", "minimum": low, "maximum": high}
        if name == "prefix_bits":  # whole bytes
            params[name]["multipleOf"] = 8
    return {"type": "object", "properties": params, "additionalProperties": False}


def _bulk_row(settings: Settings, specs: list[ModelSpec]) -> Schema:
    """One line of a bulk body (service.bulk.ndjson): an id, one of input, input_b64, text or vector, optional
    metadata."""
    raw = _any_of([input_schema(spec, settings) for spec in specs]) if specs else {}
    properties: dict[str, Schema] = {
        "id": {"type": "string", "maxLength": MAX_ID_CHARS, "pattern": BULK_ID_PATTERN, "description": NO_SURROGATES},
        "input": raw or {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "number"}}]},
        "metadata": {"anyOf": [{"type": "object"}, {"type": "null"}], "description": _metadata_rule(settings)},
    }
    one_of = [{"required": ["input"]}]
    vectors = [spec.input_dim for spec in specs if spec.featurizer not in TEXT_INPUT_KINDS]
    if vectors or not specs:  # one vector as base64 of little-endian float32
        properties["input_b64"] = _any_of([_base64_of(4 * dim) for dim in vectors]) if vectors else {"type": "string"}
        one_of.append({"required": ["input_b64"]})
    # the data files' names for an input (models.data): a text, or a vector
    if not specs or any(spec.featurizer in TEXT_INPUT_KINDS for spec in specs):
        properties["text"] = {"type": "string", "maxLength": settings.max_text_chars}
        one_of.append({"required": ["text"]})
    if vectors or not specs:
        vector = [input_schema(spec, settings) for spec in specs if spec.featurizer not in TEXT_INPUT_KINDS]
        properties["vector"] = _any_of(vector) if vector else {"type": "array", "items": {"type": "number"}}
        one_of.append({"required": ["vector"]})
    row = {"type": "object", "properties": properties, "required": ["id"], "additionalProperties": False}
    return {**row, "oneOf": one_of} if len(one_of) > 1 else {**row, "required": ["id", "input"]}


def _base64_of(n_bytes: int) -> Schema:
    return {"type": "string", "pattern": f"^{_base64_body(n_bytes)}$"}


def _bulk_body(settings: Settings) -> Schema:
    return {
        "type": "array",
        "minItems": 1,
        "items": {"$ref": "#/components/schemas/BulkRow"},
        "description": (
            f"NDJSON: one row (BulkRow) per line, each at most {settings.max_bulk_line_bytes} bytes; blank lines "
            "are skipped. A line that is not a row is skipped, the others written, and the answer is 422 "
            "rows_skipped with the report (strict=true: 422 at the first, its block not written). No rows: 422."
        ),
    }


def _import_body(settings: Settings, specs: list[ModelSpec]) -> Schema:
    """An export as POST .../import takes it (index.transfer): a header line, then rows of id, code and metadata."""
    n_bits = sorted({spec.n_bits for spec in specs})
    header = {
        "type": "object",
        "properties": {
            "n_bits": {"type": "integer", "enum": n_bits} if n_bits else {"type": "integer", "minimum": 8},
            "fingerprint": {"type": "string"},
            "index_kind": {"type": "string"},
            "index_params": {"type": "object", "additionalProperties": {"type": "integer"}},
            "model": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "count": {"type": "integer", "minimum": 0},
            "seq": {"type": "integer", "minimum": 0},
            "version": {"const": 1},
        },
        "required": ["n_bits", "fingerprint"],
        "additionalProperties": False,
    }
    hex_codes = [{"type": "string", "pattern": f"^[0-9a-fA-F]{{{n // 4}}}$"} for n in n_bits]
    row = {
        "type": "object",
        "properties": {
            "id": {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS, "pattern": "^[^\\u0000]+$"},
            "code": _any_of(hex_codes) if hex_codes else {"type": "string", "pattern": "^([0-9a-fA-F]{2})+$"},
            "metadata": {"anyOf": [{"type": "object"}, {"type": "null"}], "description": _metadata_rule(settings)},
        },
        "required": ["id", "code"],
        "additionalProperties": False,
    }
    first = {"type": "object", "properties": {"header": header}, "required": ["header"], "additionalProperties": False}
    return {
        "type": "array",
        "minItems": 1,
        "prefixItems": [first],
        "items": row,
        "description": (
            f"NDJSON: the export's header line, then one row per line, each at most {settings.max_bulk_line_bytes} "
            "bytes. The header's fingerprint and n_bits must be the collection's (409 fingerprint_mismatch); the "
            "first bad line answers 422, the blocks before it written."
        ),
    }
