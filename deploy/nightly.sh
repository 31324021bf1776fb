#!/usr/bin/env bash
# Cron wrapper (deploy/crontab): the nightly batch with catch-up, or maintenance, with retries
# while another run holds the lake. Exit codes are postloan's (docs/operations.md):
#   0 ok, 1 unexpected, 2 usage/configuration, 3 input refused, 4 lake locked, 5 output refused.
# Only 4 is worth retrying unattended; 3 needs the landing files fixed, 5 and 1 need a person.
set -uo pipefail

POSTLOAN=${POSTLOAN:-postloan}
LANDING=${LANDING:?set LANDING to the landing folder}
LAKE=${LAKE:?set LAKE to the lake folder}
LOGS=${LOGS:-/var/log/postloan}
RETRIES=${RETRIES:-6}          # attempts while the lake is locked
RETRY_SECONDS=${RETRY_SECONDS:-600}
mkdir -p "$LOGS"

what=${1:-nightly}
if [[ $what == maintain ]]; then
  command=("$POSTLOAN" maintain --lake "$LAKE" --log-file "$LOGS/maintain.jsonl")
else
  # Yesterday in the bank's time zone is the business date the extracts of tonight describe.
  yesterday=$(date -d yesterday +%F)
  command=("$POSTLOAN" backfill --catch-up --to "$yesterday" --landing "$LANDING" --lake "$LAKE"
           --log-file "$LOGS/nightly.jsonl")
fi
if [[ -n ${POSTLOAN_CONF:-} ]]; then
  command+=(--conf "$POSTLOAN_CONF")
fi

for ((attempt = 1; attempt <= RETRIES; attempt++)); do
  echo "$(date -Is) postloan $what: attempt $attempt: ${command[*]}"
  "${command[@]}"
  code=$?
  echo "$(date -Is) postloan $what: exit $code"
  if [[ $code -ne 4 ]]; then
    exit "$code"
  fi
  sleep "$RETRY_SECONDS"
done
exit 4
