"""Add notes.pinned and an index for the list order.

Additive and backward compatible: the column has a server default, so the release still
serving (which does not know the column) keeps inserting rows.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 00:00:01+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "notes",
        sa.Column("pinned", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.create_index("ix_notes_pinned_id", "notes", [sa.text("pinned DESC"), "id"])


def downgrade() -> None:
    op.drop_index("ix_notes_pinned_id", table_name="notes")
    op.drop_column("notes", "pinned")
