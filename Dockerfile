# One image for all four Touchpoint services; the command picks the service:
#   docker run touchpoint serve ingest|profile|journey|messaging
#   docker run touchpoint migrate | topics create
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, from the hashed lock alone, so code changes reuse this layer. The
# image runs services only: the `local` and `dev` extras (embedded Postgres, the broker
# binary, test tools) are not in requirements-prod.lock (`make lock` writes both locks).
COPY requirements-prod.lock ./
RUN pip install --require-hashes -r requirements-prod.lock

# The project itself: a regular (not editable) install into the venv, dependencies above.
COPY . .
RUN pip install --no-deps . \
 && touchpoint --help > /dev/null


FROM python:3.11-slim

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TOUCHPOINT_ENV=prod \
    TOUCHPOINT_HOST=0.0.0.0

RUN groupadd --system --gid 10001 touchpoint \
 && useradd --system --uid 10001 --gid touchpoint --home-dir /home/touchpoint \
        --create-home --shell /usr/sbin/nologin touchpoint
COPY --from=build /opt/venv /opt/venv

WORKDIR /home/touchpoint
# Numeric so Kubernetes `runAsNonRoot` can verify it.
USER 10001:10001

EXPOSE 8000 8001 8002 8003 8004

# No curl in slim: probe whichever service port is listening with the stdlib.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import socket, urllib.request as u; p = next(p for p in range(8001, 8005) if socket.socket().connect_ex(('127.0.0.1', p)) == 0); u.urlopen(f'http://127.0.0.1:{p}/healthz', timeout=3)"]

ENTRYPOINT ["touchpoint"]
CMD ["serve", "ingest"]
