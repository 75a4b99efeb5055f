# hamdex service image. CPU by default; for CUDA build with a CUDA torch index (docs/operations.md, "Deploy"):
#   docker build -t hamdex .
#   docker build -t hamdex:cuda --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
ARG BASE=python:3.11-slim

# ---- source: the build context (.dockerignore lists what it holds), and the optional wheels folder at /wheels
FROM ${BASE} AS source
# Optional folder of wheels inside the build context for pip --find-links, e.g. a local torch wheel for an offline
# build: --build-arg EXTRA_WHEELS=.wheels (the only such folder .dockerignore lets through; ignored by git).
ARG EXTRA_WHEELS=""
WORKDIR /src
COPY . .
RUN mkdir -p /wheels \
    && if [ -n "$EXTRA_WHEELS" ]; then cp -a "/src/$EXTRA_WHEELS/." /wheels/; fi \
    && rm -rf /src/.wheels

# ---- deps: the pinned dependencies in a venv under /opt/venv
FROM ${BASE} AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Extra package index for torch: the CPU builds by default; a CUDA one (.../whl/cu128) for GPUs; "" for PyPI only.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN python -m venv /opt/venv
WORKDIR /src
# Dependencies first: this layer is reused until pyproject.toml, constraints.txt or the wheels change.
COPY --from=source /src/pyproject.toml /src/constraints.txt ./
COPY --from=source /wheels /wheels
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], \
        sep='\n')" > requirements.txt \
    && /opt/venv/bin/pip install -c constraints.txt -r requirements.txt --find-links /wheels \
        ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"}

# ---- wheel: the project itself, as a wheel (so a source change leaves the dependency layers of the image alone)
FROM deps AS wheel
COPY --from=source /src ./
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /dist .

# ---- runtime: the venv and a non-root user; models and collections under the /data volume
FROM ${BASE}
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HAMDEX_HOST=0.0.0.0 HAMDEX_PORT=8000 \
    HAMDEX_MODEL_PATH=/data/model HAMDEX_COLLECTION_PATH=/data/collection \
    HAMDEX_COLLECTIONS_DIR=/data/collections HAMDEX_MODELS_DIR=/data/models
RUN useradd --create-home --uid 1000 hamdex && mkdir -p /data && chown hamdex:hamdex /data
COPY --from=deps /opt/venv /opt/venv
COPY --from=wheel /dist /tmp/dist
RUN /opt/venv/bin/pip install --no-deps --no-cache-dir --disable-pip-version-check /tmp/dist/*.whl \
    && rm -rf /tmp/dist && hamdex --help > /dev/null
USER 1000:1000
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000
# /readyz answers 200 once the model and the default collection are loaded; the start period covers training the
# demo model at first start (about 80 s on 2 cores, more on slower machines).
HEALTHCHECK --interval=15s --timeout=5s --retries=3 --start-period=600s CMD ["python", "-c", \
    "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/readyz' % os.getenv('HAMDEX_PORT', 8000), timeout=4)"]
# Configuration: HAMDEX_* environment variables (service/settings.py). Serving on 0.0.0.0 needs API keys
# (HAMDEX_API_KEYS or HAMDEX_API_KEYS_FILE), or HAMDEX_ALLOW_UNAUTHENTICATED=true for an open API.
# --demo: with no model at /data/model, train the 20 Newsgroups demo model and index its training posts into
# /data/collection at first start, from the tarball at $HAMDEX_DEMO_CORPUS (mount it; the container has no
# other source unless it can reach the internet). With a model mounted and a non-empty collection it just serves.
CMD ["hamdex", "serve", "--demo"]
