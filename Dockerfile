# authgate: a static binary on a distroless, non-root base.
#   docker build -t authgate .
#   docker run -p 8080:8080 -e UPSTREAM_URL=https://api.example.com \
#     -e SUPABASE_JWT_SECRET=... authgate
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/authgate ./cmd/authgate \
 && /out/authgate version

# distroless/static: CA certificates (TLS upstreams are verified), tzdata,
# no shell, and the nonroot user (uid 65532).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/authgate /usr/local/bin/authgate
COPY config.yaml /etc/authgate/config.yaml
ENV AUTHGATE_CONFIG=/etc/authgate/config.yaml
USER nonroot:nonroot
# Render sets PORT; config.yaml listens on ${PORT:-8080}.
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/authgate"]
CMD ["serve"]
