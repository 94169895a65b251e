# counterparty: news-commentary bot for Discord and Telegram.
#
# Build:  docker build -t counterparty .
# Run:    docker run --env-file .env -v counterparty-data:/data counterparty
#
# Two stages: "build" makes a virtualenv and installs the package into it exactly as the README
# does (python3 -m venv, then pip install from the source tree); the final stage copies only that
# virtualenv, so no build tools, pip caches or sources are left in the image.

FROM python:3.11.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
# The postgres extra adds psycopg (binary wheels), so the same image serves the compose profile.
RUN python3 -m venv /opt/counterparty \
    && /opt/counterparty/bin/pip install --no-cache-dir ".[postgres]"

FROM python:3.11.11-slim-bookworm
ENV PATH=/opt/counterparty/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    COUNTERPARTY_DATABASE_URL=sqlite:////data/counterparty.db \
    COUNTERPARTY_CONFIG=/app/feeds.toml
RUN groupadd --system --gid 10001 counterparty \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin counterparty \
    && mkdir -p /data \
    && chown 10001:10001 /data
COPY --from=build /opt/counterparty /opt/counterparty
WORKDIR /app
COPY feeds.toml ./
VOLUME ["/data"]
USER 10001:10001
# `counterparty health` exits 0 only while the scheduler heartbeat is fresh and the database answers.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["counterparty", "health"]
ENTRYPOINT ["counterparty"]
CMD ["run"]
