# syntax=docker/dockerfile:1
# Multi-stage build of the hubcredits operator: a static binary on
# distroless, running as the non-root user 65532.
FROM golang:1.26 AS build
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

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/manager /manager
USER 65532:65532
ENTRYPOINT ["/manager"]
