"""A device's change set, checked before anything is written: paths, sizes, text, front matter."""

from __future__ import annotations

from dataclasses import dataclass

from storage.documents import parse_document
from storage.errors import Invalid, TooLarge
from storage.layout import NOVEL_FILE, check_path


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int = 2 * 1024 * 1024
    max_changes: int = 500


def check_text(path: str, content: str, limits: Limits) -> None:
    """Valid UTF-8 without NUL, within the size limit, with front matter that parses."""
    try:
        size = len(content.encode("utf-8"))
    except UnicodeEncodeError:
        raise Invalid(
            f"{path} is not valid Unicode text", code="invalid_text", details={"path": path}
        ) from None
    if "\x00" in content:
        raise Invalid(
            f"{path} contains a NUL character", code="invalid_text", details={"path": path}
        )
    if size > limits.max_file_bytes:
        raise TooLarge(
            f"{path} is {size} bytes; the limit is {limits.max_file_bytes}",
            code="file_too_large",
            details={"path": path, "limit": limits.max_file_bytes},
        )
    try:
        parse_document(content)
    except Invalid as exc:
        raise Invalid(exc.message, code=exc.code, details={"path": path, **exc.details}) from None


def check_changes(changes: list[tuple[str, str | None]], limits: Limits) -> dict[str, str | None]:
    """The change set as path → text (None deletes), or Invalid/TooLarge for the whole request."""
    if len(changes) > limits.max_changes:
        raise TooLarge(
            f"{len(changes)} changes in one request; the limit is {limits.max_changes}",
            code="too_many_changes",
            details={"limit": limits.max_changes},
        )
    checked: dict[str, str | None] = {}
    for path, content in changes:
        check_path(path)
        if path in checked:
            raise Invalid(f"{path} appears twice", code="duplicate_path", details={"path": path})
        if content is None:
            if path == NOVEL_FILE:
                raise Invalid(
                    "novel.md cannot be deleted", code="invalid_path", details={"path": path}
                )
        else:
            check_text(path, content, limits)
        checked[path] = content
    return checked
