"""``hamdex export``, ``hamdex import`` and ``hamdex restore``: a local collection folder's data in and out
(index.transfer) and a backup brought back (index.backup). The server's routes for the same are in
service.routes.transfer; ``hamdex.Client`` reaches them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer
from hamdex.index.errors import CollectionError, ImportFormatError

FORMATS = ("ndjson", "parquet")  # index.transfer.FORMATS (not imported here: it loads pyarrow)
Format = Literal[FORMATS]  # type: ignore[valid-type]
FormatOpt = Annotated[
    Format | None, typer.Option("--format", "-f", help="Default: by the file name (.parquet), else ndjson.")
]


def _fail(exc: CollectionError) -> typer.Exit:
    typer.echo(f"error ({exc.error_type}): {exc}", err=True)
    return typer.Exit(2)


def export_cmd(
    collection: Annotated[Path, typer.Argument(metavar="COLLECTION_DIR", help="The collection folder (not open).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The file to write.")],
    fmt: FormatOpt = None,
) -> None:
    """Write every item (id, code, metadata) and the collection's header to an NDJSON or Parquet file."""
    from hamdex.index import open_collection, transfer

    try:
        with open_collection(collection) as coll:
            header = transfer.write_file(coll, out, fmt or ("parquet" if out.suffix == ".parquet" else "ndjson"))
    except CollectionError as exc:
        raise _fail(exc) from None
    typer.echo(json.dumps({"items": header.count, "seq": header.seq, "out": str(out)}))


def import_cmd(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="An export (hamdex export, or GET .../export).")],
    collection: Annotated[
        Path, typer.Option("--collection", "-c", help="The collection folder; created from the header if missing.")
    ],
    fmt: FormatOpt = None,
) -> None:
    """Load an export's items into a collection whose codes come from the same model (fingerprint, n_bits)."""
    from hamdex.index import create_collection, open_collection, transfer
    from hamdex.index.base import collection_exists

    try:
        if not file.is_file():
            raise ImportFormatError(f"no file {file}")
        header, blocks = transfer.read_file(file, fmt)
        if collection_exists(collection):
            coll = open_collection(collection)
        else:
            coll = create_collection(
                collection,
                header.n_bits,
                header.fingerprint,
                header.index_kind,
                header.index_params,
                model=header.model,
            )
        with coll:
            n = transfer.load(coll, header, blocks)
            count = len(coll)
    except CollectionError as exc:
        raise _fail(exc) from None
    typer.echo(json.dumps({"items": n, "collection_count": count, "seq": header.seq}))


def restore_cmd(
    snapshot: Annotated[Path, typer.Argument(metavar="SNAPSHOT", help="A backup folder (POST .../snapshots).")],
    collection: Annotated[Path, typer.Option("--collection", "-c", help="The folder to restore into (not open).")],
    replace: Annotated[bool, typer.Option(help="Replace the collection already in the folder.")] = False,
) -> None:
    """Bring a backup back into a collection folder that no process has open."""
    from hamdex.index import backup

    try:
        record = backup.restore(snapshot, collection, replace=replace)
    except CollectionError as exc:
        raise _fail(exc) from None
    typer.echo(json.dumps({"restored": record["name"], "seq": record["seq"], "collection": str(collection)}))
