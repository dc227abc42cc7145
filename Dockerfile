# wahub daemon. Installs exactly the way the README does (pip install of this checkout).
FROM python:3.12-slim

ENV WAHUB_HOST=0.0.0.0 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin wahub \
    && mkdir -p /data /config && chown wahub:wahub /data /config

WORKDIR /opt/wahub
COPY setup.cfg pyproject.toml README.md ./
COPY wahub ./wahub
RUN pip install . && rm -rf /opt/wahub/build

COPY config.example.yaml /config/config.yaml
COPY faq.example.yaml /config/faq.example.yaml
USER wahub
# Relative SQLite paths resolve against the working directory: sqlite:///data/wahub.db is /data/wahub.db.
WORKDIR /
VOLUME /data
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; url = 'http://127.0.0.1:%s/healthz' % os.environ.get('WAHUB_PORT', '8080'); sys.exit(urllib.request.urlopen(url, timeout=4).status != 200)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["wahub"]
CMD ["run", "-c", "/config/config.yaml"]
