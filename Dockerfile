# syntax=docker/dockerfile:1
# OETScheduler Tango device server.
#   docker build -t tango-oet:0.1.0 .
#   docker run --rm -e TANGO_HOST=<db-host>:10000 tango-oet:0.1.0 1 \
#       -ORBendPoint giop:tcp::45450 -ORBendPointPublish giop:tcp:<reachable-name>:45450
# The Helm chart (charts/tango-oet) overrides the command to pick the instance
# from the pod ordinal; see docs/deployment.md.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: install the package and its dependencies into a virtualenv -------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/tango-oet
WORKDIR /src
COPY . .
RUN /opt/tango-oet/bin/pip install . \
 && test -x /opt/tango-oet/bin/OETScheduler \
 && test -x /opt/tango-oet/bin/tango-oet \
 && /opt/tango-oet/bin/python -c "import tango, tango_oet"

# --- runtime -----------------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="tango-oet" \
      org.opencontainers.image.description="OETScheduler Tango device server: runs observing scripts in supervised worker processes" \
      org.opencontainers.image.licenses="BSD-3-Clause"

# git: git:// scripts are cloned at Prepare; tini: PID 1 that forwards SIGTERM to
# the server and reaps orphaned processes of script workers; ca-certificates:
# https git remotes and package indexes for script environments.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git tini ca-certificates \
 && rm -rf /var/lib/apt/lists/*

ARG UID=10001
ARG GID=10001
RUN groupadd --gid "${GID}" tango \
 && useradd --uid "${UID}" --gid tango --home-dir /home/tango --create-home \
        --shell /usr/sbin/nologin tango \
 && install -d -o tango -g tango -m 0750 /var/lib/tango-oet

COPY --from=build /opt/tango-oet /opt/tango-oet
# Example observing scripts (the dashboard's Prepare preset uses hello_world.py).
COPY resources/scripts/ /usr/share/tango-oet/scripts/

ENV PATH=/opt/tango-oet/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/tango

# Numeric, so that Kubernetes can verify runAsNonRoot.
USER ${UID}:${GID}
WORKDIR /var/lib/tango-oet
VOLUME ["/var/lib/tango-oet"]
# CORBA endpoint and ZMQ event/heartbeat ports used by the chart
# (pass -ORBendPoint and set TANGO_ZMQ_EVENT_PORT / TANGO_ZMQ_HEARTBEAT_PORT to use them).
EXPOSE 45450 45451 45452

ENTRYPOINT ["/usr/bin/tini", "--", "OETScheduler"]
# The server instance name; append -ORBendPoint/-ORBendPointPublish as needed.
CMD ["1"]
