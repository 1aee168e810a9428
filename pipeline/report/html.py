"""The page's building blocks: its stylesheet, escaping, status badges and tables."""

import html
import re

from ...device_tests.schema import ConversionStatus, ResultStatus
from .text import fmt, xml_text

MISSING = "missing"  # a result that is not there: not a status, a class of the page
# A manifest entry's conversion status, shown in the colours of the result it leads to.
CONVERSION_CLASS = {ConversionStatus.CONVERTED: ResultStatus.PASS,
                    ConversionStatus.UNSUPPORTED: ResultStatus.UNSUPPORTED,
                    ConversionStatus.FAILED: ResultStatus.ERROR}

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:20px 28px;
 color:#1f2328;background:#fff}
h1{font-size:22px;margin:0 0 8px} h2{font-size:18px;margin:28px 0 8px;
 border-bottom:1px solid #d0d7de;padding-bottom:4px} h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;margin:4px 0 10px} th,td{border:1px solid #d0d7de;
 padding:3px 7px;vertical-align:top;text-align:left}
thead th{position:sticky;top:0;background:#f6f8fa;z-index:1}
.scroll{max-height:80vh;overflow:auto;display:inline-block;max-width:100%}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.verdict{font-size:18px;font-weight:700;padding:8px 12px;border-radius:6px;display:inline-block}
.verdict.ok{background:#dafbe1;color:#116329} .verdict.bad{background:#ffebe9;color:#a40e26}
.badge{display:inline-block;padding:0 7px;border-radius:9px;font-weight:600;font-size:12px}
.st-pass{background:#dafbe1;color:#116329} .st-fail{background:#ffebe9;color:#cf222e}
.st-unsupported{background:#f4efd9;color:#6f5d00} .st-error{background:#82071e;color:#fff}
.st-missing{background:#f0f0f0;color:#6e7781}
td.cell a{color:inherit;text-decoration:none} td.cell{min-width:120px}
td.cell .m{display:block;font-size:12px;opacity:.9;white-space:nowrap}
td.cell .why{display:block;font-size:12px;max-width:240px}
tr.first td{border-top:2px solid #8c959f}
.meta{color:#57606a} .warn{color:#9a6700} .small{font-size:12px;color:#57606a}
details{border:1px solid #d0d7de;border-radius:6px;margin:6px 0;padding:4px 10px}
details[open]{padding-bottom:10px} summary{cursor:pointer;padding:2px 0}
details.failing{border-color:#cf222e}
.plots img{margin:4px 10px 4px 0;border:1px solid #eaeef2}
.row{display:flex;flex-wrap:wrap;gap:0 36px;align-items:flex-start}
.row>div:first-child{flex:0 1 720px;min-width:0}
code{font-size:12px;background:#f6f8fa;padding:0 3px;border-radius:3px}
.legend span{margin-right:10px}
"""


def e(value) -> str:
    """Text for HTML: escaped, and the control characters HTML forbids made visible."""
    return html.escape(xml_text(value), quote=True)


def anchor(entry_id: str) -> str:
    return "v-" + re.sub(r"[^A-Za-z0-9_.-]", "_", entry_id)


def badge(status: str | None) -> str:
    """A result status (or `missing`) in its colours."""
    status = status or MISSING
    return f'<span class="badge st-{e(status)}">{e(status)}</span>'


def conversion_badge(status: str | None) -> str:
    """A manifest entry's conversion status; an unknown one in the colours of unsupported."""
    cls = CONVERSION_CLASS.get(status or "", ResultStatus.UNSUPPORTED)
    return f'<span class="badge st-{cls}">{e(status or "?")}</span>'


def table(rows: list[tuple[str, list[str]]], columns: list[str], first: str) -> str:
    head = f"<th>{e(first)}</th>" + "".join(f"<th>{e(c)}</th>" for c in columns)
    body = "".join(f"<tr><td>{e(name)}</td>" + "".join(cells) + "</tr>" for name, cells in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def value_cell(value) -> str:
    return f'<td class="num">{e(fmt(value))}</td>'
