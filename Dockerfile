# rigfast: multi-stage image. Stage 1 builds a wheel with the Cython extensions
# compiled (a failed compile is fatal here: the image must run the fast engine);
# stage 2 installs that wheel into a slim runtime without a compiler.
#
#   docker build -t rigfast .
#   docker run -p 4000:4000 -p 127.0.0.1:4010:4010 rigfast
#
# RIGFAST_WORKERS defaults to the number of cores the container sees; set it to
# the CPU limit when the container is limited (cgroups do not change cpu_count).

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
# The compiler is only in this stage; Debian's current gcc is what we want, not a pinned one.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY rigfast ./rigfast
ENV RIGFAST_REQUIRE_EXTENSIONS=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip wheel --wheel-dir /wheels .

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RIGFAST_CLUSTER_DIR=/run/rigfast
COPY --from=build /wheels /wheels
# Installs the wheel built above (its dependencies are pinned by pyproject's ranges, resolved in stage 1).
# hadolint ignore=DL3013
RUN pip install --no-index --find-links=/wheels rigfast \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin rigfast \
    && mkdir -p /run/rigfast \
    && chown rigfast /run/rigfast
USER 10001
# 4000 public (frontends, event submission); 4010 internal API: publish it on a private network only.
EXPOSE 4000 4010
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:4010/health', timeout=2).status == 200 else 1)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["rigfast"]
