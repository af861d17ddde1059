# The runcoord image: every runcoord process (coordinator, executors, agent API and relay,
# projector, simulators) is `runcoord <command>` in it. compose.yaml runs them.
FROM python:3.11-slim

# No process in a container uses the local stack's state folder; it is writable all the same.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RUNCOORD_STATE_DIR=/tmp/runcoord-state

WORKDIR /app
COPY . /app
# Editable on purpose: the processes read topics.yaml, tools.yaml and providers.yaml beside
# their packages (runcoord.config.REPO_ROOT), which an install into site-packages would lose.
RUN pip install -e /app \
    && useradd --system --uid 10001 --no-create-home --home-dir /app --shell /usr/sbin/nologin runcoord

# Not root: the code and its files stay owned by root, read-only to the processes.
USER runcoord
ENTRYPOINT ["runcoord"]
CMD ["--help"]
