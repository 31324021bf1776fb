"""Lake tables of the collections stage (DOMAIN.md section 4, docs/collections.md).

collection_cases: each night's task list (催收任務單), one row per loan in collection.
agency_placements: the state of outsourcing (委外), carried from one run to the next.
agency_scorecard: each agency's month, with fees (委外費用結算) and elimination flags.
"""

from __future__ import annotations

from pyspark.sql import types as T

from schemas.base import BOOL, DATE, INT, LONG, MONEY, RATE, STRING, STRINGS, Column, Table
from schemas.lake import AS_OF, BORROWER_ID, BRANCH_PATH, LOAN_ID, PRODUCT_CODE
from schemas.landing import AGENCY_STATUSES, RISK_CLASSES

COLLECTION_MODES = ("REMINDER", "IN_HOUSE", "OUTSOURCED", "LEGAL")
OWNER_TYPES = ("OFFICER", "COLLECTOR", "RISK_MANAGER", "AGENCY", "UNASSIGNED")
PLACEMENT_STATUSES = ("ACTIVE", "RECALLED", "EXPIRED", "UNPLACED")
RECALL_REASONS = (
    "SETTLED",  # the loan was paid off (loans.status SETTLED)
    "WRITTEN_OFF",  # the loan was written off
    "NOT_ON_BOOK",  # the loan left the book for another reason (or its row was quarantined)
    "SEVERE_SIGNAL",  # death, fraud... (allocation.severe_signals)
    "LEGAL",  # the case moved to legal recovery
    "CURED",  # DPD back to 0
    "AGENCY_TERMINATED",  # the agency's contract ended (or it is no longer in the extract)
    "AGENCY_SUSPENDED",
    "EXPIRED",  # the placement period ran out: rotated to another agency if still outsourced
    "CAPACITY_REDUCED",  # the agency's capacity fell below what it held: newest placements recalled
)
UNPLACED_REASONS = ("SEVERE_SIGNAL", "NO_REGION", "NO_AGENCY_FOR_REGION", "ROTATION_EXHAUSTED", "NO_CAPACITY")
PURPOSES = ("COLLECT", "LOCATE_BORROWER")

ACTION = T.StructType(
    [
        T.StructField(
            "action_type", T.StringType(), True, {"comment": "SMS, PHONE, LETTER, MEETING, FIELD_VISIT, LEGAL"}
        ),
        T.StructField("contact_type", T.StringType(), True, {"comment": "BORROWER, GUARANTOR or THIRD_PARTY"}),
        T.StructField("purpose", T.StringType(), True, {"comment": "COLLECT, or LOCATE_BORROWER for third parties"}),
        T.StructField("attempts", T.IntegerType(), True, {"comment": "Attempts allowed today to this contact"}),
        T.StructField("window_start", T.StringType(), True, {"comment": "Earliest time of day, HH:MM"}),
        T.StructField("window_end", T.StringType(), True, {"comment": "Latest time of day (exclusive), HH:MM"}),
        T.StructField("note", T.StringType(), True, {"comment": "Instruction from the rule"}),
    ]
)
ACTIONS = T.ArrayType(ACTION, containsNull=False)

_BRANCH = (
    Column("branch_id", STRING, "Managing branch (row-level security)", nullable=False),
    BRANCH_PATH,
    Column("tier1_branch_id", STRING, "Tier-1 branch (一級分行)"),
    PRODUCT_CODE,
)

COLLECTION_CASES = Table(
    name="collection_cases",
    comment=(
        "The night's collection task list (催收任務單): one row per loan in collection on the date "
        "(DPD 1 or more, a rule that applies at DPD 0, or a pre-due reminder), with its stage, "
        "actions within the conduct limits, owner and the reasons."
    ),
    key=("as_of_date", "loan_id"),
    partition_by=("as_of_date",),
    columns=(
        AS_OF,
        LOAN_ID,
        BORROWER_ID,
        *_BRANCH,
        Column("officer_id", STRING, "Customer manager of the loan", nullable=False),
        Column("region_code", STRING, "Borrower's region"),
        Column("strategy_profile", STRING, "Strategy profile applied (collections.strategy_profile)", nullable=False),
        Column("dpd", INT, "Days past due on the date", nullable=False, non_negative=True),
        Column("bucket", STRING, "Delinquency bucket", nullable=False),
        Column("risk_class", STRING, "Five-category class", nullable=False, allowed=RISK_CLASSES),
        Column("overdue_amount", MONEY, "Overdue principal plus overdue interest", nullable=False),
        Column("outstanding_principal", MONEY, "Balance on the date", nullable=False),
        Column("reminder_due_date", DATE, "REMINDER cases: the due date reminded of"),
        Column("stage", STRING, "Stage: the matched rule's name (docs/collections.md)", nullable=False),
        Column("mode", STRING, "REMINDER, IN_HOUSE, OUTSOURCED or LEGAL", nullable=False, allowed=COLLECTION_MODES),
        Column("actions", ACTIONS, "Today's actions, already within the conduct limits", nullable=False),
        Column(
            "reasons", STRINGS, "Why: profile, rule, facts, placement, fallbacks (docs/collections.md)", nullable=False
        ),
        Column("owner_type", STRING, "Who does it", nullable=False, allowed=OWNER_TYPES),
        Column("owner_id", STRING, "Staff id or agency id; null when UNASSIGNED"),
        Column("agency_id", STRING, "Agency holding the case today, if placed"),
        Column("placement_id", STRING, "Placement in agency_placements, if placed"),
        Column(
            "lost_contact", BOOL, "Borrower lost contact (失聯): unreachable days or a missing signal", nullable=False
        ),
        Column(
            "unreachable_days",
            INT,
            "Days with calls but no contact since the borrower was last reached",
            nullable=False,
        ),
        Column("failed_visits", INT, "Field visits that failed in this delinquency episode", nullable=False),
        Column(
            "conduct_breaches",
            INT,
            "Recorded actions since the previous run outside the hours or over the daily attempts",
            nullable=False,
        ),
    ),
)

AGENCY_PLACEMENTS = Table(
    name="agency_placements",
    comment=(
        "Placements of cases with collection agencies (委外), carried night to night: every "
        "placement ACTIVE on the date, every placement that ended (RECALLED or EXPIRED) on the date "
        "or within the retention window (ended_date says when; kept for rotation look-back, "
        "performance weights and monthly fees), and one UNPLACED row (placement_id null) per case "
        "that needed an agency and got none."
    ),
    key=("as_of_date", "loan_id", "placement_id"),
    partition_by=("as_of_date",),
    columns=(
        AS_OF,
        Column("placement_id", STRING, "P<placed yyyyMMdd>-<loan_id>; null for UNPLACED"),
        Column("loan_id", STRING, "Loan", nullable=False),
        Column("borrower_id", STRING, "Borrower", nullable=False),
        *_BRANCH,
        Column("region_code", STRING, "Borrower's region at placement"),
        Column("agency_id", STRING, "Agency; null for UNPLACED"),
        Column("status", STRING, "ACTIVE, RECALLED, EXPIRED or UNPLACED", nullable=False, allowed=PLACEMENT_STATUSES),
        Column("placed_date", DATE, "Business date of the placement (handed over that night)"),
        Column("expires_date", DATE, "placed_date + allocation.placement_days: recalled on the first run on or after"),
        Column("ended_date", DATE, "Business date it was recalled or expired; null while ACTIVE"),
        Column("recall_reason", STRING, "Why it ended (RECALLED, EXPIRED)", allowed=RECALL_REASONS),
        Column("unplaced_reason", STRING, "Why no agency took it (UNPLACED)", allowed=UNPLACED_REASONS),
        Column("amount_at_placement", MONEY, "Amount entrusted (allocation.placement_amount_basis)", nullable=False),
        Column("dpd_at_placement", INT, "DPD when placed", nullable=False),
        Column("fee_band", STRING, "Commission band by DPD at placement", nullable=False),
        Column("challenger", BOOL, "The agency was a challenger when the case was placed"),
        Column(
            "excluded_agencies", STRINGS, "Agencies that held the loan within the rotation look-back", nullable=False
        ),
        Column(
            "recovered_amount",
            MONEY,
            "Repayments credited: value date after placed_date, up to ended_date (or the date)",
            nullable=False,
        ),
    ),
)

AGENCY_SCORECARD = Table(
    name="agency_scorecard",
    comment=(
        "Each agency's month (委外機構考核與費用結算): the current month to date and the previous, "
        "settled month, with commission, rank and the elimination flag (seed part 4 section 3)."
    ),
    key=("as_of_date", "month", "agency_id"),
    partition_by=("as_of_date",),
    columns=(
        AS_OF,
        Column("month", DATE, "First day of the month", nullable=False),
        Column("period_end", DATE, "Last day counted: month end, or the date for the current month", nullable=False),
        Column("settled", BOOL, "The month is over (its figures are the settlement)", nullable=False),
        Column("agency_id", STRING, "Agency", nullable=False),
        Column("agency_status", STRING, "Contract status on the date", allowed=AGENCY_STATUSES),
        Column("challenger", BOOL, "Challenger on the date (too few cases in the performance window)", nullable=False),
        Column("window_recovery_rate", RATE, "Recovery rate over the performance window (allocation weight)"),
        Column("cases_placed", LONG, "Placements made in the month", nullable=False, non_negative=True),
        Column("amount_placed", MONEY, "Amount at placement of those", nullable=False, non_negative=True),
        Column("cases_held", LONG, "Placements held at any time in the month", nullable=False, non_negative=True),
        Column("amount_held", MONEY, "Amount at placement of the placements held", nullable=False, non_negative=True),
        Column("recovered_amount", MONEY, "Repayments in the month credited to its placements", nullable=False),
        Column("recovery_rate", RATE, "recovered_amount / amount_held"),
        Column("cured_cases", LONG, "Placements ended in the month as CURED or SETTLED", nullable=False),
        Column("cure_rate", RATE, "cured_cases / cases_held"),
        Column("coverage_rate", RATE, "Share of held cases with an action recorded by the agency in the month"),
        Column("fee_amount", MONEY, "Commission: credited repayments x rate(agency, fee band)", nullable=False),
        Column("rank", INT, "Rank by recovery_rate among agencies holding cases (1 = best)"),
        Column("flagged_for_elimination", BOOL, "Poor performer to drop (淘汰)", nullable=False),
        Column("elimination_reason", STRING, "BELOW_FLOOR_RATE or BELOW_RELATIVE_RATE"),
    ),
)

COLLECTIONS_TABLES: tuple[Table, ...] = (AGENCY_PLACEMENTS, COLLECTION_CASES, AGENCY_SCORECARD)
