"""Wire schemas of the admin API that are not the services' own models."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from galerne.protocol.base import RequestBody, UtcDateTime, WireModel

# What a project may be called: it is typed in shells and URLs, and stored in a 64-character column.
ProjectName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
# Text without control characters: PostgreSQL refuses NUL in any text it stores or compares (a 500).
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
# A key's label: any printable text that fits its 64-character column.
KeyLabel = Annotated[str, Field(max_length=64, pattern=PRINTABLE)]


class KeyCreateRequest(RequestBody):
    project: ProjectName | None = Field(default=None, description="Project name; admin keys default to `admin`.")
    name: KeyLabel = ""
    is_admin: bool = False
    expires_at: UtcDateTime | None = None


class UsageReport(WireModel):
    object: str = "list"
    group_by: list[str]
    data: list[dict[str, Any]]
