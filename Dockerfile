# One image for every process type in the Procfile (web, worker, beat, flower).
# The default command runs web; docker-compose.yml sets the command of the others.
# Pinned to a patch release: a rebuild gets the same Python (bump it on purpose).
FROM python:3.11.11-slim

# PYTHONUNBUFFERED: log lines reach `docker logs` at once, not when a buffer fills.
# PYTHONDONTWRITEBYTECODE: the non-root user cannot write next to the installed code anyway.
# PIP_*: no notices about pip's own version or about pip running as root (it is the
# image's system Python, on purpose: nothing else lives in this image).
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# Runtime dependencies first, from the lock file alone, so that editing code does not
# download them again. requirements.lock pins every package of [project].dependencies (and
# theirs) with its hashes: pip refuses a file whose hash differs (--require-hashes). The
# `dev` and `local` extras stay out. Regenerate it after changing the dependencies:
#   pip-compile --generate-hashes --strip-extras --no-emit-index-url --no-emit-find-links \
#       --output-file requirements.lock pyproject.toml
COPY requirements.lock /tmp/
RUN pip install --no-cache-dir --require-hashes --no-deps -r /tmp/requirements.lock \
 && rm /tmp/requirements.lock

# Then the project itself, as a regular (not editable) install into site-packages,
# so the container runs exactly what `pip install .` ships: a module left out of the
# package fails here, not in production. --no-deps: the lock above installed them all.
# The source tree is removed so that nothing imports from it by accident. .dockerignore
# keeps the build context to these files (not devkit/: local tooling, never in the image).
COPY . /tmp/src/
RUN pip install --no-cache-dir --no-deps /tmp/src \
 && rm -rf /tmp/src

# Not root: a hole in the webhook endpoint does not get root in the container, and
# the installed code (owned by root) is read-only to the processes. Celery also stops
# warning about running as root. The home directory is the one writable place
# besides /tmp (where beat keeps its schedule file). USER is numeric so that a runtime
# (Kubernetes runAsNonRoot) can check it is not root without reading /etc/passwd.
RUN useradd --create-home --uid 10001 --user-group app
USER 10001:10001
WORKDIR /home/app

EXPOSE 8000

# The Procfile's web command. `sh -c` so that PORT and WEB_CONCURRENCY are read when
# the container starts; `exec` so that gunicorn is PID 1 and gets `docker stop`'s
# SIGTERM itself (graceful shutdown). Mind that gunicorn also reads WEB_CONCURRENCY
# on its own and fails on an empty value: unset it rather than set it to "".
CMD ["sh", "-c", "exec gunicorn -c python:service.web.gunicorn_conf --workers ${WEB_CONCURRENCY:-2} \"service.web.app:create_app()\""]
