"""The bulk job, local or remote: a file's blocks -> encoder -> collection, or -> a server's bulk endpoint.

- ``job``: the job itself (reading, checking, encoding, writing, resuming, the skip report).
- ``pipeline``: the read-ahead and write-behind stages the job overlaps.
- ``ndjson``: the NDJSON rows of the HTTP bulk endpoint, both directions (the route parses, the client writes).
- ``client``: ``hamdex index --server``, the job against a running server.
- ``ray``: the job's encode stage on a Ray cluster (``hamdex index --ray``; needs the ray extra).
"""
