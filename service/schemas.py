"""Request and response schemas of the REST API (separate from the internal types of models/ and index/)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, model_validator

# A raw input: a text, a float vector, or an image as rows of pixel values.
RawInput = str | list[float] | list[list[float]]
# A code on the wire: hex or base64 string, or a list of 0/1 bits (see models.bits).
WireCode = str | list[int]
CodeFormat = Literal["hex", "base64", "bits"]
# A metadata value a search filter can match (equality; true is not 1 and "1" is not 1).
FilterValue = StrictStr | StrictInt | StrictFloat | StrictBool | None
# Most nprobe / ef_search per query: FAISS takes C ints, and a larger breadth only burns time.
MAX_QUERY_PARAM = 1 << 16


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PackedVectors(_Strict):
    """Vectors or images as one base64 string of little-endian float32 values, row-major."""

    data: str = Field(..., description="base64 of the float32 values, little-endian.")
    shape: list[Annotated[int, Field(ge=1, le=1 << 24)]] = Field(
        ..., min_length=2, max_length=4, description="[items, dim] or [items, height, width(, channels)]."
    )


class EncodeRequest(_Strict):
    inputs: list[RawInput] | None = Field(
        None, description="Texts, vectors or images, as the model's featurizer takes."
    )
    inputs_b64: PackedVectors | None = Field(None, description="Vectors or images packed as float32 (large batches).")
    format: CodeFormat = "hex"
    latent: bool = Field(False, description="Also return the continuous pre-binarization latent.")

    @model_validator(mode="after")
    def _one_source(self) -> EncodeRequest:
        if (self.inputs is None) == (self.inputs_b64 is None):
            raise ValueError("give exactly one of 'inputs' or 'inputs_b64'")
        return self


class EncodeResponse(BaseModel):
    codes: list[WireCode]
    latent: list[list[float]] | None = None
    n_bits: int
    format: CodeFormat
    fingerprint: str


class ItemIn(_Strict):
    id: str = Field(..., min_length=1, max_length=512)
    input: RawInput | None = None
    code: WireCode | None = None
    metadata: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ItemIn:
        if (self.input is None) == (self.code is None):
            raise ValueError("each item needs exactly one of 'input' or 'code'")
        return self


class ItemsRequest(_Strict):
    items: list[ItemIn]
    fingerprint: str | None = Field(
        None, description="Fingerprint of the model the codes came from; refused (409) if not the collection's."
    )


class ItemsResponse(BaseModel):
    upserted: int
    inserted: int
    updated: int


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


class BulkJob(BaseModel):
    job: str
    items: int = Field(..., description="Rows consumed (committed, good or skipped), 'start' included.")
    done: bool = Field(..., description="The request that sent the rest of the body finished.")


class Query(_Strict):
    input: RawInput | None = None
    code: WireCode | None = None
    id: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Query:
        if sum(v is not None for v in (self.input, self.code, self.id)) != 1:
            raise ValueError("each query needs exactly one of 'input', 'code' or 'id'")
        return self


class SearchRequest(_Strict):
    queries: list[Query]
    k: int = Field(10, description="Most hits per query.")
    radius: int | None = Field(None, description="Only hits within this Hamming distance (inclusive).")
    include_metadata: bool = True
    filter: dict[str, FilterValue] | None = Field(
        None, description="Only items whose metadata has each of these top-level fields equal to the value."
    )
    nprobe: int | None = Field(
        None, ge=1, le=MAX_QUERY_PARAM, description="Inverted lists to visit (index kind ivf only)."
    )
    ef_search: int | None = Field(
        None, ge=1, le=MAX_QUERY_PARAM, description="Graph search breadth (index kind hnsw only)."
    )


class Hit(BaseModel):
    id: str
    distance: int
    metadata: dict[str, Any] | None = None


class SearchResponse(BaseModel):
    results: list[list[Hit]]


class Health(BaseModel):
    status: Literal["ok"]


class CreateCollectionRequest(_Strict):
    name: str = Field(..., description="1-64 letters, digits, '_', '.' or '-', starting with a letter or digit.")
    model: str = Field("default", description="Model the collection's codes come from (a name under models_dir).")
    index_kind: str = Field("flat", description="flat, ivf, hnsw, hash or multihash.")
    index_params: dict[str, Any] = Field(default_factory=dict, description="The kind's parameters (positive ints).")
    backend: Literal["faiss", "milvus"] = Field("faiss", description="Where the items live: FAISS or Milvus.")
    milvus_uri: str | None = Field(
        None, description="backend milvus: a Milvus server's URL; unset: a milvus-lite file in the collection."
    )

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
    featurizer: str
    input_dim: int
    index_kind: str
    count: int
    device: str
    versions: dict[str, str]
