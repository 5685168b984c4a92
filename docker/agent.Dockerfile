# Device agent image (arm64 for a Raspberry Pi, or amd64): no torch, only onnxruntime + grpcio + protobuf + numpy.
#   docker buildx build --platform linux/arm64,linux/amd64 -f docker/agent.Dockerfile -t edge-agent .
#   docker run -d --name edge-agent -p 50051:50051 -v edge-agent:/var/lib/edge-agent \
#       -v $PWD/token:/run/secrets/edge-agent-token:ro -v $PWD/pki:/pki:ro edge-agent
# The agent refuses a non-loopback address without TLS; inside a container it must listen on 0.0.0.0, so the
# default command below uses TLS + token (mount the PKI), or pass --insecure explicitly for a trusted lab network.
# BASE: any image with Python 3.11+ whose `pip` and `python` are on PATH (scripts/build_images.sh passes a Debian-made
# one where no registry is reachable).
ARG BASE=python:3.11-slim
FROM ${BASE}
WORKDIR /src
COPY pyproject.toml README.md ./
COPY configs ./configs
COPY toolchain ./toolchain
COPY agent ./agent
RUN pip install --no-cache-dir ".[agent]" && rm -rf /src
VOLUME /var/lib/edge-agent
EXPOSE 50051
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; import sys; c=grpc.insecure_channel('127.0.0.1:50051'); sys.exit(0 if g.HealthStub(c).Check(h.HealthCheckRequest(), timeout=3).status == 1 else 1)" || exit 1
ENTRYPOINT ["edge-agent"]
CMD ["serve", "--listen", "0.0.0.0:50051", "--store", "/var/lib/edge-agent", \
     "--token-file", "/run/secrets/edge-agent-token", "--tls-cert", "/pki/server.pem", "--tls-key", "/pki/server.key"]
