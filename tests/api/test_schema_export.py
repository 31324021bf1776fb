"""The committed schema export matches the code: a schema change is a visible diff."""

from __future__ import annotations

from api.schema import SDL_FILE, sdl


def test_committed_schema_graphql_matches_the_code() -> None:
    assert SDL_FILE.is_file(), "run: python -m api.schema --write"
    assert SDL_FILE.read_text(encoding="utf-8") == sdl(), "schema changed: run python -m api.schema --write"


def test_schema_has_the_root_fields_of_the_issue() -> None:
    text = sdl()
    for field in (
        "runs(last:",
        "portfolio(groupBy: GroupBy!",
        "loans(asOf: Date",
        "loan(loanId: ID!",
        "migrationRates(",
        "rollRates(",
        "vintage(",
        "kpiBreaches(",
        "earlyWarnings(",
        "inspectionTasks(",
        "collectionCases(",
        "agencies(",
        "quarantine(runId: ID!",
    ):
        assert field in text, field
