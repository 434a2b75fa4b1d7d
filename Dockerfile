# One multi-stage Dockerfile for every Clinic service: build once, then a
# small runtime image per service, chosen with the SERVICE build argument
# (patients-service, studies-service, gateway, fhir, or clinic-dev for the
# development credentials).
#
#   docker build --build-arg SERVICE=patients-service -t clinic/patients-service .
#
# The build needs no protoc: the proto crate compiles .proto files in Rust.

# The listing page: TypeScript generated from proto/ (buf + protobuf-es),
# bundled with esbuild; served by the gateway from /usr/share/clinic/web.
FROM node:20.19-bookworm-slim AS web
WORKDIR /src
COPY web/package.json web/package-lock.json ./web/
RUN cd web && npm ci --no-audit --no-fund
COPY proto ./proto
COPY web ./web
RUN cd web && npm run generate && npm run typecheck && npm run build

FROM rust:1.95.0-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        --bin patients-service --bin studies-service --bin gateway --bin fhir --bin clinic-health --bin clinic-dev \
 && mkdir -p /out \
 && cp target/release/patients-service target/release/studies-service \
       target/release/gateway target/release/fhir target/release/clinic-health target/release/clinic-dev /out/ \
 && /out/clinic-dev descriptor --out /out/clinic.pb

# Envoy with the API's descriptor set (HTTP routes included) for its JSON
# transcoder, made by the same build: `docker build --target envoy`.
FROM envoyproxy/envoy:v1.40.0 AS envoy
COPY --from=build /out/clinic.pb /etc/envoy/clinic.pb
COPY envoy/envoy.compose.yaml /etc/envoy/envoy.yaml
COPY envoy/tls-sds.yaml /etc/envoy/tls-sds.yaml

FROM debian:bookworm-slim AS runtime
ARG SERVICE
RUN test -n "$SERVICE" || (echo "build with --build-arg SERVICE=<patients-service|studies-service|gateway|fhir|clinic-dev>" && false) \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin clinic \
 && mkdir -p /etc/clinic && chown clinic /etc/clinic
COPY --from=build /out/${SERVICE} /usr/local/bin/service
COPY --from=build /out/clinic-health /usr/local/bin/clinic-health
COPY --from=build /out/${SERVICE} /usr/local/bin/${SERVICE}
COPY --from=web /src/web/dist /usr/share/clinic/web
USER clinic
ENV RUST_LOG=info LOG_FORMAT=json
# LISTEN_ADDR is set per service (0.0.0.0:<port> inside a container).
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=5 CMD ["clinic-health"]
ENTRYPOINT ["/usr/local/bin/service"]
