# congvu-gateway container image.
#
#   docker build -t congvu-gateway .
#   docker run -d --name congvu -p 25:2525 --stop-timeout 50 \
#     -v /srv/congvu/etc:/etc/congvu:ro \
#     -v /srv/congvu/certs:/etc/congvu/certs:ro \
#     -v congvu-data:/var/lib/congvu \
#     congvu-gateway
#
# /etc/congvu/congvu.toml must listen on 0.0.0.0:2525 inside the container (127.0.0.1 would
# be unreachable through the published port), and its downstream must name the mail server's
# address, not 127.0.0.1 (that is the container itself). See docs/admin/docker.md.
#
# The same image runs the auditors' web console, as a second container on the same volume
# ([web] listen = "0.0.0.0:8026"; see docs/admin/docker.md):
#   docker run -d --name congvu-web -p 127.0.0.1:8026:8026 \
#     -v /srv/congvu/etc:/etc/congvu:ro -v congvu-data:/var/lib/congvu \
#     congvu-gateway congvu web --config /etc/congvu/congvu.toml
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed uid/gid so that a host directory mounted on /var/lib/congvu can be chowned to it.
RUN groupadd --system --gid 2525 congvu \
 && useradd --system --uid 2525 --gid congvu --home-dir /var/lib/congvu \
            --no-create-home --shell /usr/sbin/nologin congvu

# Only what the package needs: no tests, no local state (see .dockerignore as well).
COPY pyproject.toml README.md /tmp/src/
COPY gateway/ /tmp/src/gateway/
COPY policies/ /tmp/src/policies/
# The default trust store: gateway/data/certs links to ../../certs, packaged as real files.
COPY certs/ /tmp/src/certs/
RUN pip install /tmp/src && rm -rf /tmp/src

# /etc/congvu: configuration, policy and certs/, mounted read-only at run time.
# /var/lib/congvu: the gateway's only writable place (decisions.sqlite; var/maildir when the
# downstream is a Maildir), owned by the service user.
RUN install -d -m 0755 /etc/congvu /etc/congvu/certs \
 && install -d -o congvu -g congvu -m 0750 /var/lib/congvu
WORKDIR /var/lib/congvu
VOLUME ["/var/lib/congvu"]

USER congvu
EXPOSE 2525 8026

# Healthy = the SMTP port answers with a 220 greeting (standard library only; says QUIT so
# the probe leaves no half-open session behind). Assumes listen port 2525.
HEALTHCHECK --interval=30s --timeout=10s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import socket,sys; s=socket.create_connection(('127.0.0.1',2525),5); g=s.recv(512); s.sendall(b'QUIT\\r\\n'); s.close(); sys.exit(0 if g.startswith(b'220') else 1)"]

# SIGTERM (docker stop) stops the gateway; SIGHUP (docker kill -s HUP) reloads the policy.
STOPSIGNAL SIGTERM
CMD ["congvu", "serve", "--config", "/etc/congvu/congvu.toml"]
