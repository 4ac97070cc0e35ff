"""``report.md``: the report's sections and tables as GitHub-flavoured Markdown (no plots).

Cell text is HTML-escaped (``<``, ``>``, ``&``) and ``|`` is escaped, so a hostile model name or config
value renders as text on a pull request, never as markup.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import Any

from mmdistill.report.page import Section, report_sections, run_title
from mmdistill.report.table import Table, is_numeric


def md_text(value: Any) -> str:
    """Text safe inside Markdown: HTML-escaped, ``|`` escaped, newlines folded to spaces."""
    s = html.escape(str(value), quote=False)
    return re.sub(r"\s*\n\s*", " ", s).replace("|", r"\|")


def _cell(text: str, tone: str | None) -> str:
    s = md_text(text)
    return f"**{s}**" if tone in ("ship", "warn") and s.strip() else s


def table_md(table: Table) -> str:
    """One :class:`Table` as a pipe table, with its title and note."""
    out = [f"### {md_text(table.title)}", ""]
    out.append("| " + " | ".join(md_text(c) for c in table.columns) + " |")
    right = [i > 0 and all(is_numeric(r[i].text) for r in table.rows) for i in range(len(table.columns))]
    out.append("|" + "|".join("---:" if r else ":---" for r in right) + "|")
    out += ["| " + " | ".join(_cell(c.text, c.tone) for c in row) + " |" for row in table.rows]
    if table.note:
        out += ["", f"_{md_text(table.note)}_"]
    return "\n".join(out)


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def section_md(sec: Section) -> str:
    """One :class:`Section` in Markdown; plots are named with a pointer to report.html."""
    out = [f"## {md_text(sec.title)}", ""]
    for text, tone in sec.paragraphs:
        out += [_cell(text, tone), ""]
    if sec.plots:
        out += [f"_Plots ({len(sec.plots)}) in report.html._", ""]
    for t in sec.tables:
        out += [table_md(t), ""]
    if sec.pre is not None:
        fence = _fence(sec.pre)
        out += ["<details><summary>show</summary>", "", f"{fence}yaml", sec.pre.rstrip("\n"), fence, "",
                "</details>", ""] if sec.collapsed else [f"{fence}", sec.pre.rstrip("\n"), fence, ""]
    return "\n".join(out)


def page_md(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """A complete Markdown document of ``sections``."""
    return "\n".join([f"# {md_text(title)}", "", md_text(subtitle), ""] + [section_md(s) for s in sections])


def render_markdown(results: dict[str, Any]) -> str:
    """``report.md`` of one run."""
    subtitle = (f"{len(results.get('models') or [])} models; run folder {results.get('run_dir')}; built "
                f"{results.get('created')}; plots in report.html next to this file")
    return page_md(run_title(results), subtitle, report_sections(results))
