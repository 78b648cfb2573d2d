# litserve in a container: the project installed on a slim Python, run by a user without privileges.
#
#   docker build -t litserve .
#   docker run --rm -p 8000:8000 litserve          # serves examples/simple_server.py as /app/server.py
#
# For your own model, build on it:   FROM litserve
#                                    COPY server.py /app/server.py
#                                    CMD ["serve", "server:api", "--port", "8000"]
# or write a Dockerfile for your file with `litserve dockerize server.py`.
# GPUs: the same slim base works (PyPI's CUDA builds of torch carry their CUDA libraries; the NVIDIA
# container runtime mounts the driver): install torch in your image and run with `--gpus all`.
ARG PYTHON_VERSION=3.12
FROM python:${PYTHON_VERSION}-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 --user-group litserve

# The project, installed (not run from the source tree): only what the package needs to build.
COPY pyproject.toml README.md /src/
COPY litserve /src/litserve
RUN pip install /src && rm -rf /src

WORKDIR /app
COPY --chown=litserve:litserve examples/simple_server.py /app/server.py
USER litserve

EXPOSE 8000
# Liveness only (/health answers while the process is up); load balancers use /ready.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status != 200)"]

# The server is PID 1 and gets SIGTERM itself: it drains (/ready 503, in-flight requests finish within
# --shutdown-grace), then exits 0. Give `docker stop -t` more than shutdown_grace + 10 s.
ENTRYPOINT ["litserve"]
CMD ["serve", "server:SimpleLitAPI", "--host", "0.0.0.0", "--port", "8000", "--accelerator", "cpu"]
