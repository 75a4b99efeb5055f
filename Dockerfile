# hamdex service image (CPU). The full deployment work (multi-stage, CUDA variant, container test) is issue 6.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    HAMDEX_MODEL_PATH=/data/model HAMDEX_COLLECTION_PATH=/data/collection HAMDEX_HOST=0.0.0.0

WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY models ./models
COPY index ./index
COPY service ./service
COPY evaluation ./evaluation
# The CPU build of torch from the PyTorch index keeps the image small; pass a different index for CUDA.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --extra-index-url "$TORCH_INDEX" -c constraints.txt . \
    && useradd --create-home --uid 1000 hamdex && mkdir -p /data && chown hamdex /data

USER hamdex
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=300s CMD python -c \
    "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"
# --demo trains and indexes the 20 Newsgroups demo into /data on first start when no model is mounted
# (set HAMDEX_DEMO_CORPUS to the tarball inside the container, or give it internet for scikit-learn's fetch).
# Serving on 0.0.0.0 needs API keys (HAMDEX_API_KEYS or HAMDEX_API_KEYS_FILE); for a local trial only,
# HAMDEX_ALLOW_UNAUTHENTICATED=true serves an open API.
CMD ["hamdex", "serve", "--demo"]
