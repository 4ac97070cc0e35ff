"""``report.html``: one self-contained page (inline CSS, inline PNG plots, no script, no fetch).

Every text that comes from the run (model names, config values, notes) goes through
:func:`html.escape`. A Content-Security-Policy meta tag forbids the page any request: only ``data:``
images and the inline style are allowed, so even a hostile string could not load anything.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from mmdistill.report.analysis import heat_color, text_color
from mmdistill.report.page import Section, report_sections, run_title
from mmdistill.report.table import Table, is_numeric

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
       max-width: 1500px; padding: 0 24px 48px; color: #1a1a1a; background: #fff; }
h1 { font-size: 22px; margin: 20px 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px;
     border-bottom: 1px solid #ddd; padding-bottom: 4px; } h3 { font-size: 15px; margin: 16px 0 6px; }
nav { font-size: 13px; margin: 8px 0 16px; } nav a { margin-right: 12px; color: #0b57d0; }
.sub { color: #555; margin: 0 0 8px; } .muted, .note { color: #666; font-size: 12px; }
.scroll { overflow-x: auto; } table { border-collapse: collapse; font-size: 12.5px; margin: 4px 0; }
th, td { border: 1px solid #d5d5d5; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; position: sticky; top: 0; } td:first-child, th:first-child { text-align: left; }
td.l { text-align: left; } tr:hover td { outline: 1px solid #bbb; }
.ship { background: #e3f6e3; font-weight: 600; color: #14532d; }
.warn { color: #b00020; font-weight: 700; }
p.ship, p.warn { padding: 6px 10px; border-radius: 4px; } p.warn { background: #fdecee; }
figure { margin: 8px 16px 8px 0; display: inline-block; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #e5e5e5; } figcaption { font-size: 12px; color: #555; }
.grid { display: flex; flex-wrap: wrap; gap: 4px; }
pre { background: #f7f7f7; padding: 10px; overflow-x: auto; font-size: 12px; border: 1px solid #e5e5e5; }
details > summary { cursor: pointer; color: #0b57d0; margin: 6px 0; }
"""


def esc(value: Any) -> str:
    """``value`` as HTML-escaped text (quotes too, so it is safe inside attributes)."""
    return html.escape(str(value), quote=True)


def table_html(table: Table) -> str:
    """One :class:`Table` as an HTML ``<table>``; cells with a value are coloured on the table's scale."""
    kind = "heat" if table.heat else "plain"
    out = [f'<h3 id="t-{esc(table.key)}">{esc(table.title)}</h3>', '<div class="scroll">',
           f'<table class="{kind}" data-table="{esc(table.key)}">', "<thead><tr>"]
    out += [f"<th>{esc(c)}</th>" for c in table.columns]
    out.append("</tr></thead><tbody>")
    for row in table.rows:
        cells = []
        for cell in row:
            css = " ".join(c for c in (cell.tone, "" if is_numeric(cell.text) else "l") if c)
            attrs = f' class="{esc(css)}"' if css else ""
            if table.heat is not None and cell.value is not None:
                bg = heat_color(cell.value, *table.heat)
                attrs += f' style="background:{bg};color:{text_color(bg)}"'
            cells.append(f"<td{attrs}>{esc(cell.text)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    if table.note:
        out.append(f'<p class="note">{esc(table.note)}</p>')
    return "\n".join(out)


def _figure(uri: str | None, caption: str) -> str:
    if not uri or not uri.startswith("data:image/"):  # only inline images: the page must fetch nothing
        return f'<p class="muted">No plot for {esc(caption)}: nothing measured to draw.</p>'
    return (f'<figure><img src="{esc(uri)}" alt="{esc(caption)}"><figcaption>{esc(caption)}</figcaption>'
            "</figure>")


def section_html(sec: Section, plots: Mapping[str, str | None]) -> str:
    """One :class:`Section`: heading, paragraphs, plots, tables and the preformatted block."""
    out = [f'<section id="{esc(sec.key)}"><h2>{esc(sec.title)}</h2>']
    for text, tone in sec.paragraphs:
        out.append(f'<p class="{esc(tone)}">{esc(text)}</p>' if tone else f"<p>{esc(text)}</p>")
    if sec.plots:
        out.append('<div class="grid">' + "".join(_figure(plots.get(k), c) for k, c in sec.plots) + "</div>")
    out += [table_html(t) for t in sec.tables]
    if sec.pre is not None:
        pre = f"<pre>{esc(sec.pre)}</pre>"
        out.append(f"<details><summary>show</summary>{pre}</details>" if sec.collapsed else pre)
    out.append("</section>")
    return "\n".join(out)


def page_html(title: str, subtitle: str, sections: Sequence[Section], plots: Mapping[str, str | None]) -> str:
    """A complete HTML document of ``sections`` with a table of contents."""
    nav = "".join(f'<a href="#{esc(s.key)}">{esc(s.title)}</a>' for s in sections)
    body = "\n".join(section_html(s, plots) for s in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<link rel="icon" href="data:,">\n'  # no favicon request
        f"<title>{esc(title)}</title>\n<style>{CSS}</style></head>\n<body>\n"
        f'<h1>{esc(title)}</h1>\n<p class="sub">{esc(subtitle)}</p>\n<nav>{nav}</nav>\n{body}\n'
        "</body></html>\n"
    )


def render_html(results: dict[str, Any], plots: Mapping[str, str | None]) -> str:
    """``report.html`` of one run from its results and its drawn plots (key → PNG data URI)."""
    subtitle = (f"{len(results.get('models') or [])} models; run folder {results.get('run_dir')}; "
                f"built {results.get('created')} (results.json schema {results.get('schema_version')})")
    return page_html(run_title(results), subtitle, report_sections(results), plots)
