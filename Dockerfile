# One image, two entrypoints: the nightly batch (Spark, local mode) and the GraphQL API.
#   docker build -t postloan .          (make image; make image-check runs both entrypoints)
#   docker run --rm -v /data:/data postloan nightly --as-of 2026-10-31 --landing /data/landing --lake /data/lake
#   docker run --rm -v /data:/data postloan maintain --lake /data/lake
#   docker run --rm -p 8000:8000 -v /data/lake:/data/lake:ro -e POSTLOAN_JWT_SECRET \
#       postloan serve --lake /data/lake --host 0.0.0.0
# (docs/operations.md: Docker). The Node.js GraphQL audit is a test tool and is not in the image.

# The base images, by name: a bank's registry mirror (--build-arg PYTHON_IMAGE=registry.example/python:...)
# or stand-ins made from Debian packages (deploy/image/bases-from-debian.sh) where no registry is
# reachable. The final stage needs Debian's apt and a python with pip on PATH.
ARG MAVEN_IMAGE=maven:3.9-eclipse-temurin-17
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# The Delta jars, fetched by Maven in a stage of their own so that Maven stays out of the image.
FROM ${MAVEN_IMAGE} AS jars
WORKDIR /build
COPY jars/pom.xml jars/pom.xml
RUN mvn --batch-mode --quiet -f jars/pom.xml dependency:copy-dependencies \
      -DincludeScope=runtime -DincludeGroupIds=io.delta -DoutputDirectory=lib

FROM ${PYTHON_IMAGE}

# Spark's JVM; JAVA_HOME through a link so the image builds on amd64 and arm64 alike.
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s "$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")" /opt/java

WORKDIR /app
COPY --from=jars /build/jars/lib jars/lib
COPY pyproject.toml README.md ./
COPY jobs jobs
COPY schemas schemas
COPY api api
COPY conf conf
ENV POSTLOAN_JARS_DIR=/app/jars/lib \
    POSTLOAN_CONF=/app/conf \
    JAVA_HOME=/opt/java \
    PYTHONUNBUFFERED=1
# The driver JVM's class archive, learnt from a small night with this image's JDK and jars
# (jobs/classcache.py): every night's driver maps it instead of loading Spark's classes again.
# The night binds to loopback: a build container's hostname need not resolve, and Spark's driver
# stops at once when it does not.
RUN pip install --no-cache-dir . \
 && SPARK_LOCAL_IP=127.0.0.1 SPARK_LOCAL_HOSTNAME=localhost python -m jobs.classcache --out /app/jars/lib/postloan.jsa \
 && useradd --create-home --uid 10001 postloan
# Runs as an unprivileged user: the mounted lake must be writable by uid 10001 (or pass --user).
USER postloan
WORKDIR /home/postloan
EXPOSE 8000
ENTRYPOINT ["postloan"]
CMD ["--help"]
