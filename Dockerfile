# syntax=docker/dockerfile:1
# Multi-stage build of the seghub binary; one image runs every role:
#   seghub serve            all-in-one (embedded SQLite + JetStream)
#   seghub serve <service>  split mode (PostgreSQL + external NATS), see deploy/k8s
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/root/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/seghub ./cmd/seghub

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/seghub /usr/local/bin/seghub
ENV SEGHUB_DATA_DIR=/var/lib/seghub
VOLUME /var/lib/seghub
EXPOSE 8080 9090
USER nonroot
ENTRYPOINT ["/usr/local/bin/seghub"]
CMD ["serve"]
