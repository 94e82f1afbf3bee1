# syntax=docker/dockerfile:1
# The hubcredits operator image for users with Docker (docker buildx build
# --platform linux/amd64,linux/arm64 .): a static binary on distroless,
# running as the non-root user 65532. `make image` builds the same image
# without Docker (hack/tools/image: same user, workdir, entrypoint, paths and
# labels; hack/tools/image's TestDockerfileAgrees checks they agree).
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-trimpath
COPY go.mod go.sum ./
RUN go mod download
COPY main.go ./
COPY api/ api/
COPY billing/ billing/
COPY controllers/ controllers/
COPY hubapi/ hubapi/
COPY internal/ internal/
COPY webhooks/ webhooks/
ARG TARGETOS=linux TARGETARCH=amd64
RUN GOOS=$TARGETOS GOARCH=$TARGETARCH go build -ldflags="-s -w" -o /out/manager .

# distroless static :nonroot brings /etc/passwd with nonroot (65532), the CA
# bundle at /etc/ssl/certs/ca-certificates.crt and /tmp, as make image does.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="hubcredits" \
      org.opencontainers.image.source="https://github.com/hubcredits/hubcredits" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="$VERSION"
COPY --from=build /out/manager /manager
USER 65532:65532
WORKDIR /
ENTRYPOINT ["/manager"]
