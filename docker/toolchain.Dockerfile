# Host toolchain image (x86_64): edge-export with torch 2.14.1 (CPU execution).
#   docker build -f docker/toolchain.Dockerfile -t edge-opt-toolchain .
#   docker run --rm -v $PWD/artifacts:/work/artifacts -v $DATA:/data -e EDGE_OPT_DATA_DIR=/data \
#       edge-opt-toolchain edge-export --precision int8 --out /work/artifacts
# BASE: any image with Python 3.11+ whose `pip` and `python` are on PATH. PIP_FIND_LINKS: folders of wheels (mounted
# into the build) that pip prefers to the package index, e.g. a local copy of torch; empty = the index only.
ARG BASE=python:3.11-slim
FROM ${BASE}
ARG PIP_FIND_LINKS=""
WORKDIR /src
COPY pyproject.toml README.md ./
COPY configs ./configs
COPY toolchain ./toolchain
COPY agent ./agent
RUN pip install --no-cache-dir ".[toolchain]"
WORKDIR /work
ENV EDGE_OPT_CACHE_DIR=/work/.cache
ENTRYPOINT []
CMD ["edge-export", "--help"]
