"""Plain text tables for operator commands: a header, a rule, aligned columns."""

from __future__ import annotations

from collections.abc import Sequence


def render(headers: Sequence[str], rows: Sequence[Sequence[object]],
           numeric: Sequence[bool] | None = None) -> str:
    """Columns as wide as their widest cell; `numeric` columns align right. The last
    column is not padded (no trailing blanks)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    right = list(numeric) if numeric is not None else [False] * len(headers)

    def line(row: Sequence[str]) -> str:
        out = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right, strict=True)]
        return "  ".join(out).rstrip()

    head = line(list(headers))
    return "\n".join([head, "-" * len(head), *(line(r) for r in cells)])
