# The nightly job (and, once it lands, the API) in one image; the Delta jars are baked in.
#   docker build -t postloan .
#   docker run --rm -v /data:/data postloan nightly --as-of 2026-10-31 --landing /data/landing --lake /data/lake
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless maven \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY jars/pom.xml jars/pom.xml
RUN mvn --batch-mode --quiet -f jars/pom.xml dependency:copy-dependencies \
      -DincludeScope=runtime -DincludeGroupIds=io.delta -DoutputDirectory=lib \
 && rm -rf /root/.m2

COPY pyproject.toml README.md ./
COPY jobs jobs
COPY schemas schemas
COPY api api
COPY conf conf
RUN pip install --no-cache-dir .

ENV POSTLOAN_JARS_DIR=/app/jars/lib \
    POSTLOAN_CONF=/app/conf \
    JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64
ENTRYPOINT ["postloan"]
CMD ["--help"]
