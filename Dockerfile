# The runcoord image: every runcoord process (coordinator, executors, agent API and relay,
# projector, simulators) is `runcoord <command>` in it. compose.yaml runs them.
FROM python:3.11-slim

# No process in a container uses the local stack's state folder; it is writable all the same.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RUNCOORD_STATE_DIR=/tmp/runcoord-state \
    RUNCOORD_HOME=/app

WORKDIR /app
COPY . /app
# A plain install, as a user gets it. RUNCOORD_HOME=/app: tools.yaml, topics.yaml and
# providers.yaml are read from /app (mount your own over them); the package's copies otherwise.
RUN pip install /app \
    && useradd --system --uid 10001 --no-create-home --home-dir /app --shell /usr/sbin/nologin runcoord

# Not root: the code and its files stay owned by root, read-only to the processes.
USER runcoord
ENTRYPOINT ["runcoord"]
CMD ["--help"]
