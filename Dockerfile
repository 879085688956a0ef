# l2lb container images. One build, two runnable targets:
#
#   docker build --target runtime   -t l2lb:dev .            # allocator, leases, apiserver (non-root, uid 65532)
#   docker build --target announcer -t l2lb-announcer:dev .  # announcer (needs CAP_NET_RAW, nothing else)
#
# Dependencies come only from requirements.lock (pinned + hashed, made by `sh deploy/lock.sh`);
# the l2lb wheel itself is installed with --no-deps so nothing unpinned sneaks in.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/l2lb
# 1) the locked dependency set (its own layer: source changes do not reinstall it)
COPY requirements.lock ./
RUN /opt/l2lb/bin/pip install --require-hashes --only-binary=:all: -r requirements.lock
# 2) l2lb itself, as a wheel, without resolving anything again
COPY pyproject.toml README.md ./
COPY src ./src
COPY services ./services
RUN /opt/l2lb/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/l2lb/bin/pip install --no-deps /wheels/l2lb-*.whl \
 && /opt/l2lb/bin/python -m compileall -q /opt/l2lb/lib \
 && { /opt/l2lb/bin/pip uninstall -y pip setuptools wheel >/dev/null 2>&1 || true; }
COPY deploy/healthcheck.py /opt/l2lb/bin/l2lb-healthcheck
RUN chmod 0755 /opt/l2lb/bin/l2lb-healthcheck

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="l2lb" \
      org.opencontainers.image.description="LoadBalancer IPs for bare-metal Kubernetes: LB-IPAM + ARP/NDP with sub-second failover" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 65532 l2lb \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin l2lb \
 && install -d -o 65532 -g 65532 -m 0750 /var/lib/l2lb
COPY --from=build /opt/l2lb /opt/l2lb
ENV PATH=/opt/l2lb/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    L2LB_HEALTH_URL=http://127.0.0.1:9100/healthz
# allocator, leases and the embedded API server never need root
USER 65532:65532
WORKDIR /tmp
EXPOSE 9100
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 CMD ["l2lb-healthcheck"]
ENTRYPOINT ["l2lb"]
CMD ["--help"]

# ---------------------------------------------------------------------------------------------
# The announcer opens AF_PACKET sockets, which needs CAP_NET_RAW in the effective set. Docker and
# Kubernetes give added capabilities to uid 0 only (no ambient capabilities for other users, and
# no_new_privs blocks file capabilities), so this target runs as uid 0 and MUST be started with
# every capability dropped except NET_RAW: compose `cap_drop: [ALL]` + `cap_add: [NET_RAW]`,
# Kubernetes `capabilities: {drop: [ALL], add: [NET_RAW]}`. It is never privileged.
FROM runtime AS announcer
# hadolint ignore=DL3002
USER 0:0
ENV L2LB_HEALTH_URL=http://127.0.0.1:9473/healthz
EXPOSE 9473
CMD ["announcer", "--help"]
