# The balancer image: `balancer serve` and `worker start` (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Install the project from a build folder that is removed afterwards, so that the working
# folder holds task code only and never shadows the installed packages.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY common/ common/
COPY balancer/ balancer/
COPY worker/ worker/
RUN pip install . && rm -rf /src

# Workers import tasks by module path from the working folder (it is on sys.path):
# the examples ship in the image; mount or copy your own task modules into /app.
WORKDIR /app
COPY examples/ examples/

RUN useradd --system --create-home --uid 10001 balancer
USER balancer

CMD ["balancer", "--help"]
