# syntax=docker/dockerfile:1
#
# mutexd's container image: a static binary on distroless/static, running
# as a non-root user.
#
#   docker build --build-arg VERSION=v1.2.3 -t mutexd .
#   docker run -p 127.0.0.1:7070:7070 mutexd
#
# The "demo" stage is the docker-compose demo app (docker build --target demo).
# deploy/image_test.go runs this file's go build commands and checks the
# binaries are static and carry the version.

ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/mutexd ./cmd/mutexd
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/demo ./deploy/demo

FROM gcr.io/distroless/static-debian12:nonroot AS demo
COPY --from=build /out/demo /usr/local/bin/demo
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/demo"]

# The last stage is the default target: the mutexd image.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/mutexd /usr/local/bin/mutexd
USER 65532:65532
ENV MUTEXD_LISTEN=0.0.0.0:7070
EXPOSE 7070
# healthcheck finds the port through MUTEXD_LISTEN, so overriding it is enough.
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/mutexd", "healthcheck", "--timeout", "3s"]
ENTRYPOINT ["/usr/local/bin/mutexd"]
