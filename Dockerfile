# syntax=docker/dockerfile:1
# Two images from one file:
#   docker build -t pgchaos .                     the small static image (the default target): pgchaos
#                                                 alone, started like toxiproxy's image (the control API
#                                                 on 0.0.0.0:8474); a drop-in for ghcr.io/shopify/toxiproxy
#   docker build --target full -t pgchaos:full .  with PostgreSQL 15, PgBouncer, psql and a shell: for
#                                                 `pgchaos run` with exec steps and --embedded in CI jobs
# Multi-arch: docker buildx build --platform linux/amd64,linux/arm64 ... (the Go build cross-compiles
# on the build machine's platform; no emulation needed for it).
# Stamp the version: --build-arg VERSION=0.1.0 --build-arg COMMIT=$(git rev-parse HEAD) --build-arg DATE=$(date -u +%FT%TZ)

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
ARG TARGETOS=linux
ARG TARGETARCH
ARG VERSION=dev
ARG COMMIT=
ARG DATE=
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath \
      -ldflags "-s -w -X github.com/pgchaos/pgchaos/internal/buildinfo.Version=${VERSION} \
        -X github.com/pgchaos/pgchaos/internal/buildinfo.Commit=${COMMIT} \
        -X github.com/pgchaos/pgchaos/internal/buildinfo.Date=${DATE}" \
      -o /out/pgchaos ./cmd/pgchaos

# The fuller image: pgchaos with PostgreSQL's server binaries (for --embedded), PgBouncer, psql and
# sh (for exec steps and workloads), run as an unprivileged user that initdb accepts.
FROM debian:bookworm-slim AS full
ARG VERSION=dev
ARG COMMIT=
ARG DATE=
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 postgresql-client-15 pgbouncer ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 pgchaos \
 && mkdir -p /work && chown pgchaos /work
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGCHAOS_PG_BINDIR=/usr/lib/postgresql/15/bin
COPY --from=build /out/pgchaos /usr/local/bin/pgchaos
LABEL org.opencontainers.image.title="pgchaos (full)" \
      org.opencontainers.image.description="pgchaos with PostgreSQL 15, PgBouncer and a shell, for pgchaos run in CI jobs" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}" \
      org.opencontainers.image.created="${DATE}" \
      org.opencontainers.image.source="https://github.com/pgchaos/pgchaos" \
      org.opencontainers.image.licenses="Apache-2.0"
USER pgchaos
WORKDIR /work
EXPOSE 8474
ENTRYPOINT ["pgchaos"]
CMD ["--help"]

# The small image, last so that it is the default target: a static binary on distroless, non-root.
FROM gcr.io/distroless/static-debian12:nonroot AS static
ARG VERSION=dev
ARG COMMIT=
ARG DATE=
COPY --from=build /out/pgchaos /usr/local/bin/pgchaos
LABEL org.opencontainers.image.title="pgchaos" \
      org.opencontainers.image.description="A PostgreSQL wire-protocol chaos proxy; speaks toxiproxy's API" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}" \
      org.opencontainers.image.created="${DATE}" \
      org.opencontainers.image.source="https://github.com/pgchaos/pgchaos" \
      org.opencontainers.image.licenses="Apache-2.0"
USER nonroot:nonroot
# 8474: the control API (toxiproxy's port); proxies created through it listen where they are told
# (Testcontainers' modules use 8666 and up).
EXPOSE 8474
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 CMD ["pgchaos", "healthcheck", "--quiet"]
ENTRYPOINT ["pgchaos"]
# As toxiproxy's image: the API on every interface, without a token (toxiproxy's clients send
# none); publish 8474 only where the tests run. Set PGCHAOS_API_TOKEN to require a token.
CMD ["-host=0.0.0.0"]
