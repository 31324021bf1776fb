"""Lake tables about parties to the loans: the borrowers, with their personal data.

The loan snapshot names a borrower by id only. The API shows a loan's borrower (name, ID number,
phone) to callers allowed to see personal data and masked to everyone else (jobs/masking.py), so
the nightly batch publishes the accepted landing borrowers of the date here, pinned by the run
ledger like every other table. The personal-data columns are marked `pii`: BI access to this
table must be restricted to roles cleared for personal data.
"""

from __future__ import annotations

from schemas.base import STRING, Column, Table
from schemas.lake import AS_OF

BORROWERS = Table(
    name="borrowers",
    comment=(
        "Borrowers accepted from the landing extract on the business date, with personal data "
        "(masked by the API unless the caller may see it)."
    ),
    key=("as_of_date", "borrower_id"),
    partition_by=("as_of_date",),
    columns=(
        AS_OF,
        Column("borrower_id", STRING, "Borrower id", nullable=False),
        Column("name", STRING, "Full name", nullable=False, pii=True),
        Column("id_number", STRING, "Resident ID number", nullable=False, pii=True),
        Column("phone", STRING, "Mobile phone", pii=True),
        Column("region_code", STRING, "Region of residence", nullable=False),
    ),
)

PARTY_TABLES: tuple[Table, ...] = (BORROWERS,)

__all__ = ["BORROWERS", "PARTY_TABLES"]
