"""Self-contained HTML building blocks: escaped text, tables, figures as base64 `data:` images, sections.

Nothing here references a file or URL outside the page: styles are inline and images are embedded,
so the report opens anywhere (an e-mail attachment, an MLflow artifact view) exactly as written.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
from PIL import Image

FIGURE_DPI = 90

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.best { background: #e8f6e8; } .note { color: #8a5a00; background: #fff6e0; padding: 0.4em 0.8em; }
img { max-width: 100%; border: 1px solid #eee; } code { background: #f6f6f6; padding: 0 0.2em; }
nav a { margin-right: 1em; }
img.px { width: 200px; image-rendering: pixelated; } td.cell { border: none; padding: 2px; text-align: center; }
.meta td:first-child { font-weight: bold; }
"""


@dataclass(frozen=True)
class Section:
    anchor: str  # the id of the <section>, linked from the table of contents
    title: str
    body: str  # HTML


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def paragraph(text: str) -> str:
    return f"<p>{esc(text)}</p>"


def figure_data_uri(fig: plt.Figure) -> str:
    """PNG bytes of the figure as a `data:` URI; the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def pil_data_uri(img: Image.Image, fmt: str = "PNG") -> str:
    """PNG for label maps (exact colours, tiny); JPEG for photos and blends (noisy pixels compress badly as PNG)."""
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.convert("RGB").save(buf, format="JPEG", quality=90)
    else:
        img.save(buf, format="PNG", optimize=True)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def pil_image(img: Image.Image, alt: str, fmt: str = "PNG") -> str:
    return f'<img class="px" src="{pil_data_uri(img, fmt)}" alt="{esc(alt)}">'


def image(fig: plt.Figure, alt: str) -> str:
    return f'<img src="{figure_data_uri(fig)}" alt="{esc(alt)}">'


def table(header: Sequence[str], rows: Iterable[Sequence[object]], numeric: set[int] = frozenset(),
          row_classes: Sequence[str] | None = None) -> str:
    """A table of escaped cells; columns in `numeric` are right-aligned."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = "".join(f'<td class="num">{esc(c)}</td>' if j in numeric else f"<td>{esc(c)}</td>"
                        for j, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def image_grid(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A table whose cells are already-built HTML (images), with plain-text column titles."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="cell">{c}</td>' for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def key_values(pairs: Iterable[tuple[str, object]]) -> str:
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in pairs)
    return f'<table class="meta"><tbody>{rows}</tbody></table>'


def page(title: str, header: str, sections: Sequence[Section]) -> str:
    """The whole document: title, header block, a table of contents and the sections."""
    toc = "".join(f'<a href="#{esc(s.anchor)}">{esc(s.title)}</a>' for s in sections)
    body = "".join(f'<section id="{esc(s.anchor)}"><h2>{esc(s.title)}</h2>{s.body}</section>' for s in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{esc(title)}</h1>{header}<nav>{toc}</nav>{body}</body></html>\n")
