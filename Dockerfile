# syntax=docker/dockerfile:1
# Multi-stage build: a static pgchaos binary on a minimal base, run as non-root.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/pgchaos ./cmd/pgchaos

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/pgchaos /usr/local/bin/pgchaos
USER nonroot:nonroot
# 6543: the proxy's client port in the examples; 8474: the control API.
EXPOSE 6543 8474
ENTRYPOINT ["pgchaos"]
CMD ["--help"]
