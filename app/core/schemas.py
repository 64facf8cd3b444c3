"""Schema pieces shared by every domain: list pages and name rules."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

T = TypeVar("T")

# AutoGen agent names must be Python identifiers; "user" is the task's source.
Name = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"),
    Field(description="A Python identifier, unique per owner.", examples=["writer"]),
]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ListPage(BaseModel, Generic[T]):
    data: list[T] = Field(description="This page of items, newest first.")
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` to read the next page; absent on the last page."
    )
