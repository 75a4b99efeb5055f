"""Request and response schemas of the REST API (separate from the internal types of models/ and index/).

Numbers and flags are strict (``k: true``, ``"k": "5"``, ``5.5`` and a bit ``true`` are refused, not coerced); an
integer may be written ``5.0``, which JSON, and the OpenAPI document's JSON Schema, call the same number. Ids and filter
fields and values may not hold a lone surrogate (JSON's ``"\\ud800"`` escape makes one): SQLite cannot take it, and
what is stored could not be read back. Ids may not hold U+0000 either (SQLite's JSON functions end a string there).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from hamdex.index.store import MAX_INDEXED_FIELDS
from hamdex.index.validation import NAME_PATTERN, check_id
from hamdex.service.filter_schema import Filter
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

MAX_ID_CHARS = 512
# a payload-indexed metadata field: the names a URL path segment carries unchanged (service.routes.indexes)
INDEX_FIELD_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"
# An id for the OpenAPI document: no U+0000. No lone surrogate either (check_item_id), which the document says in
# words: a pattern naming surrogates is not a regex to JSON Schema tools built on Rust or UTF-8 (schemathesis's)
ID_PATTERN = r"^[^\x00]*$"
NO_SURROGATES = "No lone surrogates (a '\\ud800' escape without its pair)."
NAME_REGEX = f"^{NAME_PATTERN.pattern}$"  # a collection or model name (index.registry.check_name)


def check_utf8(value: str, what: str = "text") -> str:
    """``value``, unless it holds a lone surrogate (then ValueError: a 422)."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{what} {value[:40]!r} holds a lone surrogate (not UTF-8)") from None
    return value


def check_item_id(value: str) -> str:
    """``value`` if a collection takes it as an id (index.validation.check_id: no U+0000, no lone surrogate);
    otherwise a ValueError (InvalidItemsError is one), which pydantic reports as a 422."""
    return check_id(value, "id")


def _whole(value: Any) -> Any:
    """A number without a fraction as the integer it is (``5.0`` -> 5); anything else as given."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# An integer: a JSON number without a fraction (5 or 5.0), never a boolean or a string
JsonInt = Annotated[StrictInt, BeforeValidator(_whole)]
ItemId = Annotated[
    StrictStr,
    Field(min_length=1, max_length=MAX_ID_CHARS, description=NO_SURROGATES, json_schema_extra={"pattern": ID_PATTERN}),
    AfterValidator(check_item_id),
]
# A raw input: a text, a float vector, or an image as rows of pixel values.
RawInput = str | list[StrictFloat] | list[list[StrictFloat]]
# A code on the wire: hex or base64 string, or a list of 0/1 bits (see models.bits; 2 is its code_format error).
WireCode = str | list[JsonInt]
CodeFormat = Literal["hex", "base64", "bits"]
# A metadata value a search filter can match (equality; true is not 1 and "1" is not 1).
FilterValue = StrictStr | StrictInt | StrictFloat | StrictBool | None
# Most nprobe / ef_search per query: FAISS takes C ints, and a larger breadth only burns time.
MAX_QUERY_PARAM = 1 << 16
QueryParam = Annotated[StrictInt, Field(ge=1, le=MAX_QUERY_PARAM), BeforeValidator(_whole)]  # bounds first: see shape


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _source(description: str | None = None) -> Any:
    """A field of an exactly-one-of group (:func:`_exactly_one`): absent or given, never null, so the document
    shows it without null and without a default."""
    return Field(None, description=description, json_schema_extra=lambda schema: schema.pop("default", None))


def _one_of(*names: str) -> dict[str, Any]:
    """The document's statement of :func:`_exactly_one`: each branch requires one of the fields."""
    return {"oneOf": [{"required": [name]} for name in names]}


def _exactly_one(model: BaseModel, names: tuple[str, ...], what: str) -> None:
    """ValueError (a 422) unless exactly one of ``names`` was given, and not as null: the document shows these
    fields without null, and an explicit null that counted as absent would be a request it calls invalid."""
    given = [name for name in names if name in model.model_fields_set]
    if len(given) != 1 or getattr(model, given[0]) is None:
        listed = ", ".join(f"'{name}'" for name in names[:-1]) + f" or '{names[-1]}'"
        raise ValueError(f"{what} needs exactly one of {listed}, not null")


class PackedVectors(_Strict):
    """Vectors or images as one base64 string of little-endian float32 values, row-major."""

    data: str = Field(..., description="base64 of the float32 values, little-endian.")
    # the bounds before the validator: after it, pydantic cannot write them as minimum / maximum
    shape: list[Annotated[StrictInt, Field(ge=1, le=1 << 24), BeforeValidator(_whole)]] = Field(
        ..., min_length=2, max_length=4, description="[items, dim] or [items, height, width(, channels)]."
    )


class EncodeRequest(_Strict):
    model_config = ConfigDict(json_schema_extra=_one_of("inputs", "inputs_b64"))

    inputs: list[RawInput] | SkipJsonSchema[None] = _source("Texts, vectors or images, as the model takes them.")
    inputs_b64: PackedVectors | SkipJsonSchema[None] = _source("Vectors or images packed as float32 (large batches).")
    format: CodeFormat = "hex"
    latent: StrictBool = Field(False, description="Also return the continuous pre-binarization latent.")

    @model_validator(mode="after")
    def _one_source(self) -> EncodeRequest:
        _exactly_one(self, ("inputs", "inputs_b64"), "a request")
        return self


class EncodeResponse(BaseModel):
    codes: list[WireCode]
    latent: list[list[float]] | None = None
    n_bits: int
    format: CodeFormat
    fingerprint: str


class ItemIn(_Strict):
    model_config = ConfigDict(json_schema_extra=_one_of("input", "code", "text", "vector"))

    id: ItemId
    input: RawInput | SkipJsonSchema[None] = _source()
    code: WireCode | SkipJsonSchema[None] = _source()
    # the data files' names for an input (models.data), so that a file's row is a request's item as it is
    text: StrictStr | SkipJsonSchema[None] = _source("A text input, as a data file's row names it.")
    vector: list[StrictFloat] | SkipJsonSchema[None] = _source("A vector input, as a data file's row names it.")
    metadata: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ItemIn:
        _exactly_one(self, ("input", "code", "text", "vector"), "each item")
        if self.input is None and self.code is None:  # text or vector: the routes read the input
            self.input = self.text if self.text is not None else self.vector
        return self


class ItemsRequest(_Strict):
    items: list[ItemIn]
    fingerprint: str | None = Field(
        None, description="Fingerprint of the model the codes came from; refused (409) if not the collection's."
    )


class ItemsResponse(BaseModel):
    upserted: int = Field(..., description="Items of the request, applied in order.")
    inserted: int = Field(..., description="Items whose id was new.")
    updated: int = Field(..., description="Items that replaced one of the same id (an earlier one of the request too).")


class ItemOut(BaseModel):
    id: str
    code: WireCode
    metadata: dict[str, Any] | None = None


class DeleteResponse(BaseModel):
    deleted: str


class BulkExample(BaseModel):
    row: int | None = Field(None, description="0-based: the row's line among the body's non-blank lines, plus start.")
    id: str | None = None
    message: str


class BulkResponse(BaseModel):
    items: int = Field(..., description="Rows upserted by this request.")
    skipped: int = Field(..., description="Bad rows skipped.")
    reasons: dict[str, int] = Field(..., description="Rows skipped by reason (error type).")
    examples: dict[str, list[BulkExample]] = Field(..., description="The first few skipped rows of each reason.")
    seconds: float
    collection_count: int
    resumed_from: int = Field(..., description="The 'start' of the request: rows a previous request did.")


class BulkRowsSkipped(BulkResponse):
    """The 422 of a bulk body with bad rows (not strict): the good rows are written; this is the report."""

    error: str
    error_type: Literal["rows_skipped"]


class BulkJob(BaseModel):
    job: str
    items: int = Field(..., description="Rows consumed (committed, good or skipped), 'start' included.")
    done: bool = Field(..., description="The request that sent the rest of the body finished.")


class Query(_Strict):
    model_config = ConfigDict(json_schema_extra=_one_of("input", "code", "id"))

    input: RawInput | SkipJsonSchema[None] = _source()
    code: WireCode | SkipJsonSchema[None] = _source()
    id: ItemId | SkipJsonSchema[None] = _source("The id of a stored item, whose code is the query.")

    @model_validator(mode="after")
    def _one_source(self) -> Query:
        _exactly_one(self, ("input", "code", "id"), "each query")
        return self


class Rerank(_Strict):
    candidates: JsonInt = Field(
        100,
        description="Hamming candidates per query to rescore (at least k are); at most HAMDEX_MAX_RERANK_CANDIDATES.",
    )
    pool: JsonInt | None = Field(
        None,
        description="Three-stage ranking (docs/rerank.md): fetch this many Hamming candidates, order them by the "
        "query's per-bit scores, and rescore the first 'candidates' by cosine with the stored vectors. At most "
        "HAMDEX_MAX_RERANK_CANDIDATES; below 'candidates' it is raised to them.",
    )


class SearchRequest(_Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"not": {"required": ["bits", "rerank"]}})

    queries: list[Query]
    k: JsonInt = Field(10, description="Most hits per query.")
    radius: JsonInt | None = Field(None, description="Only hits within this Hamming distance (inclusive).")
    include_metadata: StrictBool = True
    filter: Filter | None = None
    nprobe: QueryParam | None = Field(None, description="Inverted lists to visit (index kind ivf only).")
    ef_search: QueryParam | None = Field(None, description="Graph search breadth (index kind hnsw only).")
    candidates: QueryParam | None = Field(
        None, description="Prefix candidates re-ranked by the full code (index kind nested only, docs/nested.md)."
    )
    rerank: Rerank | None = Field(
        None,
        description="Two-stage ranking (docs/rerank.md): the Hamming top candidates rescored by cosine with the "
        "collection's stored vectors, or else by the query's per-bit scores against their bits; hits gain a score.",
    )
    bits: JsonInt | None = Field(
        None,
        description="Rank by the first bits bits of the codes only (docs/nested.md): a multiple of 8 from 8 to the "
        "collection's code length (the default); distances and radius count on that prefix. An exact scan: not "
        "with rerank, nor (below the full length) with nprobe, ef_search or candidates.",
    )

    @model_validator(mode="after")
    def _bits_alone(self) -> SearchRequest:
        if {"bits", "rerank"} <= self.model_fields_set:  # as the document's "not" says: given, even as null
            raise ValueError("'bits' (a prefix search) does not combine with 'rerank'")
        return self

    @property
    def is_plain(self) -> bool:
        """No filter, radius, rerank or prefix: the k nearest, which the engine micro-batches (service.engine); the
        other searches go to its heavy-search queue."""
        return self.radius is None and not self.filter and self.rerank is None and self.bits is None


class Hit(BaseModel):
    id: str
    distance: int
    metadata: dict[str, Any] | None = None
    score: float | None = Field(
        None,
        exclude_if=lambda v: v is None,
        description="Reranked searches only: cosine with the stored vector, or the asymmetric score; absent where "
        "the query had neither (a code) and the hits keep the Hamming order.",
    )


class SearchResponse(BaseModel):
    results: list[list[Hit]]


class Health(BaseModel):
    status: Literal["ok"]


class CreateCollectionRequest(_Strict):
    name: str = Field(
        ...,
        description="1-64 letters, digits, '_', '.' or '-', starting with a letter or digit.",
        json_schema_extra={"pattern": NAME_REGEX},
    )
    model: str = Field(
        "default",
        description="Model the collection's codes come from (a name under models_dir).",
        json_schema_extra={"pattern": NAME_REGEX},
    )
    index_kind: str = Field("flat", description="flat, ivf, hnsw, hash, multihash or nested.")
    index_params: dict[str, Any] = Field(default_factory=dict, description="The kind's parameters (positive ints).")
    backend: Literal["faiss", "milvus"] = Field("faiss", description="Where the items live: FAISS or Milvus.")
    milvus_uri: str | None = Field(
        None, description="backend milvus: a Milvus server's URL; unset: a milvus-lite file in the collection."
    )
    vectors: Literal["float16", "int8"] | None = Field(
        None,
        description="Keep each item's vector too, for reranked searches (docs/rerank.md): float16 (2 bytes per "
        "dimension) or int8 with a per-item scale (1 byte per dimension + 4); backend faiss, a dense, sentence or "
        "pixels model (409 vectors_unsupported otherwise).",
    )
    indexed_fields: list[Annotated[StrictStr, Field(pattern=INDEX_FIELD_PATTERN)]] = Field(
        default_factory=list,
        max_length=MAX_INDEXED_FIELDS,
        description="Top-level metadata fields to give a payload index at creation, as PUT .../indexes/{field} "
        "would (docs/filters.md); backend faiss (409 unsupported_by_backend otherwise).",
    )

    @field_validator("index_params")
    @classmethod
    def _whole_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        return {key: _whole(value) for key, value in params.items()}  # the kind checks the rest (ints in bounds)

    @model_validator(mode="after")
    def _uri_for_milvus(self) -> CreateCollectionRequest:
        if self.milvus_uri is not None and self.backend != "milvus":
            raise ValueError("'milvus_uri' is for backend 'milvus'")
        return self


class CollectionInfo(BaseModel):
    name: str
    model: str
    n_bits: int
    index_kind: str
    index_params: dict[str, int]
    count: int
    fingerprint: str
    backend: str = "faiss"
    vectors: str | None = Field(None, exclude_if=lambda v: v is None, description="Its stored vectors' type.")
    vector_dim: int | None = Field(None, exclude_if=lambda v: v is None, description="Their dimension, once fixed.")


class UnavailableCollection(BaseModel):
    name: str
    error: str
    error_type: str


class CollectionList(BaseModel):
    collections: list[CollectionInfo]
    unavailable: list[UnavailableCollection] = Field(
        default_factory=list, description="Collections that exist but cannot be opened, with the reason."
    )


class DropResponse(BaseModel):
    dropped: str


class Info(BaseModel):
    fingerprint: str
    n_bits: int
    bottleneck: str
    members: int = 1  # independent autoencoders whose codes are concatenated (models.ensemble)
    # the prefix widths at which the codes are nested (ModelConfig.nested; docs/nested.md): search ``bits`` and the
    # ``nested`` index kind's ``prefix_bits`` at these rank by codes of their own; [] = not trained nested
    nested: list[int] = []
    # the bits the model was trained at when its code is read out of their scores by PCA and ITQ
    # (ModelConfig.readout_from; the text and pixel presets under 32 bits); 0 = the code's own width
    readout_from: int = 0
    featurizer: str
    input_dim: int
    index_kind: str
    count: int
    device: str
    versions: dict[str, str]
    # the checkpoint's training report (models.train.training_report): steps, validation, code health, the ITQ
    # comparison and what the safeguard did; None for checkpoints from before it
    training: dict[str, Any] | None = None


# ---- reconstruct and generate (service.routes.decode) -----------------------------------------------------------

# A mask of an input's missing values (true: missing), flat or as rows like the input: for pixel and dense models.
Mask = list[StrictBool] | list[list[StrictBool]]
ImageFormat = Literal["png", "array"]
MAX_TOP_WORDS = 1000
MAX_SEED = (1 << 32) - 1


class ReconstructItem(_Strict):
    input: RawInput
    mask: Mask | None = Field(None, description="Missing values (true), to inpaint; pixel and dense models only.")


class DecodeOptions(_Strict):
    image_format: ImageFormat = Field("png", description="Images as base64 PNG or as rows of pixel values.")
    top_words: JsonInt = Field(10, ge=1, le=MAX_TOP_WORDS, description="Text: words per output, most probable first.")


class ReconstructRequest(DecodeOptions):
    items: list[ReconstructItem]


class GenerateRequest(DecodeOptions):
    # codes, or n codes sampled from the prior (seed only with n: it seeds the sampling)
    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {"required": ["codes"], "not": {"anyOf": [{"required": ["n"]}, {"required": ["seed"]}]}},
                {"required": ["n"], "not": {"required": ["codes"]}},
            ]
        }
    )

    codes: list[WireCode] | SkipJsonSchema[None] = _source("Codes to decode (hex, base64 or bits).")
    n: Annotated[StrictInt, Field(ge=1), BeforeValidator(_whole)] | SkipJsonSchema[None] = _source(
        "Codes to sample from the prior."
    )
    seed: Annotated[StrictInt, Field(ge=0, le=MAX_SEED), BeforeValidator(_whole)] | None = Field(
        None, description="With n: the sampling's seed (unset: random)."
    )

    @model_validator(mode="after")
    def _one_source(self) -> GenerateRequest:
        _exactly_one(self, ("codes", "n"), "a request")
        if self.codes is not None and "seed" in self.model_fields_set:
            raise ValueError("'seed' goes with 'n' (sampled codes), not with 'codes'")
        return self


class WeightedWord(BaseModel):
    word: str
    weight: float


class DecodedItem(BaseModel):
    code: str = Field(..., description="The code (hex) the output was decoded from.")
    image: str | None = Field(None, description="Image models, image_format png: base64 of a PNG.")
    pixels: list[Any] | None = Field(None, description="Image models, image_format array: rows of values 0-255.")
    vector: list[float] | None = Field(None, description="Dense models: the vector; sentence models: the embedding.")
    words: list[WeightedWord] | None = Field(None, description="Text models: the top words of the decoded bag.")


class DecodeResponse(BaseModel):
    outputs: list[DecodedItem]
    kind: Literal["text", "sentence", "pixels", "dense"] = Field(
        ..., description="The model's featurizer: which field is set (sentence models: vector, the embedding)."
    )
    n_bits: int
    fingerprint: str
    seed: int | None = Field(None, description="Sampled codes: the seed that draws them again.")


# ---- export, import and backups (service.routes.transfer) ------------------------------------------------------


class ImportResponse(BaseModel):
    items: int = Field(..., description="Rows read and upserted (a later row of an id replaces an earlier one).")
    collection_count: int = Field(..., description="Items in the collection afterwards.")
    seq: int = Field(..., description="The export's sequence number, from its header.")
    seconds: float


class SnapshotInfo(BaseModel):
    name: str = Field(..., description="The backup's folder: UTC time and sequence number.")
    seq: int = Field(..., description="Every write up to this sequence number is in the backup, none after it.")
    created_at: str
    bytes: int


class SnapshotList(BaseModel):
    snapshots: list[SnapshotInfo]
