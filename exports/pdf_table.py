"""A long table in a PDF (fpdf2): rows of wrapped text, ruled, the headings on a shaded row
repeated at the top of every page.

Drawn with fpdf2's text and line primitives over a table of character widths kept per font:
fpdf2's own `table()` measures every character of every cell again while it breaks lines
(20,000 calls took minutes), and a rectangle around every cell cost as much as its text. So
the rules go a page at a time: a line under each row, and each column's edges from the
headings down to the page's last row."""
from __future__ import annotations

from itertools import accumulate

HEADING_FILL = (235, 238, 242)
_PAD = 0.6                  # mm above and below a cell's lines


class RuledTable:
    """`add(cells)` draws a row under the last (a new page first when it does not fit; a cell
    longer than a page is cut there, marked "…"); `close()` rules the columns of the last page.
    Cells are single-spaced text (no tabs or line breaks)."""

    def __init__(self, pdf, widths: list[float], headings: list[str], size: float,
                 line_height: float, font: str):
        self.pdf = pdf
        self.headings = [" ".join(heading.split()) for heading in headings]
        self.size, self.line_height, self.font = size, line_height, font
        self._edges = list(accumulate(widths, initial=pdf.l_margin))
        self._lefts = [x + pdf.c_margin for x in self._edges]        # where a cell's text starts
        self._rooms = [width - 2 * pdf.c_margin for width in widths]  # and how wide it may be
        self._widths = {style: _CharWidths(pdf) for style in ("", "B")}
        self._most_lines = 0                  # of a cell: what a page holds under its headings
        self._heading_row()
        self._most_lines = int((pdf.page_break_trigger - pdf.get_y() - 2 * _PAD) / line_height)

    def add(self, cells: list[str]) -> None:
        self._row(cells, "")

    def close(self) -> None:
        self._rule_columns()

    def _heading_row(self) -> None:
        self._top = self.pdf.get_y()
        self._row(self.headings, "B", heading=True)

    def _row(self, cells: list[str], style: str, heading: bool = False) -> None:
        pdf = self.pdf
        pdf.set_font(self.font, style, self.size)
        wrapped = self._wrapped
        lines = [wrapped(text, room, style) if text else ()
                 for text, room in zip(cells, self._rooms)]
        if self._most_lines and max(map(len, lines)) > self._most_lines:
            lines = [self._cut(cell, room, style) for cell, room in zip(lines, self._rooms)]
        height = max(1, *map(len, lines)) * self.line_height + 2 * _PAD
        if not heading and pdf.get_y() + height > pdf.page_break_trigger:
            self._rule_columns()
            pdf.add_page()
            self._heading_row()
            pdf.set_font(self.font, style, self.size)
        left, right, y = self._edges[0], self._edges[-1], pdf.get_y()
        if heading:
            pdf.set_fill_color(*HEADING_FILL)
            pdf.rect(left, y, right - left, height, style="DF")
        else:
            pdf.line(left, y + height, right, y + height)
        first = y + _PAD + 0.8 * self.line_height  # a baseline: a fifth of a line above its bottom
        for cell, x in zip(lines, self._lefts):
            for number, line in enumerate(cell):
                pdf.text(x, first + number * self.line_height, line)
        pdf.set_xy(pdf.l_margin, y + height)

    def _cut(self, lines, room: float, style: str):
        """A cell longer than a page: the lines a page holds, the last one ending in "…"."""
        if len(lines) <= self._most_lines:
            return lines
        width, kept = self._widths[style], lines[self._most_lines - 1]
        while kept and sum(map(width.__getitem__, kept + "…")) > room:
            kept = kept[:-1]
        return [*lines[:self._most_lines - 1], kept + "…"]

    def _rule_columns(self) -> None:
        """Each column's edges, from the page's headings down to its last row."""
        bottom = self.pdf.get_y()
        for x in self._edges:
            self.pdf.line(x, self._top, x, bottom)

    def _wrapped(self, text: str, room: float, style: str) -> list[str]:
        """`text` in lines at most `room` wide: broken at spaces, a longer word by characters."""
        width = self._widths[style]
        if sum(map(width.__getitem__, text)) <= room:
            return [text]                       # most cells: one line
        lines, line, used = [], "", 0.0
        space = width[" "]
        for word in text.split():
            size = sum(map(width.__getitem__, word))
            if line and used + space + size <= room:
                line, used = f"{line} {word}", used + space + size
                continue
            if line:
                lines.append(line)
            line, used = "", 0.0
            for ch in word:                    # a word wider than the cell: by characters
                step = width[ch]
                if line and used + step > room:
                    lines.append(line)
                    line, used = "", 0.0
                line, used = line + ch, used + step
        return lines + [line] if line or not lines else lines


class _CharWidths(dict):
    """Width of each character in the PDF's current font, measured once (a font and style
    per table)."""

    def __init__(self, pdf):
        super().__init__()
        self.pdf = pdf

    def __missing__(self, ch: str) -> float:
        self[ch] = width = self.pdf.get_string_width(ch)
        return width
