"""A long table in a PDF (fpdf2): rows of wrapped text in ruled cells, the headings on a shaded
row repeated at the top of every page. Drawn with fpdf2's text and rectangle primitives over a
table of character widths kept per font: fpdf2's own `table()` measures every character of
every cell again while it breaks lines (20,000 calls took minutes)."""
from __future__ import annotations

HEADING_FILL = (235, 238, 242)
_PAD = 0.6                  # mm above and below a cell's lines


class RuledTable:
    """`add(cells)` draws a row under the last (a new page first when it does not fit)."""

    def __init__(self, pdf, widths: list[float], headings: list[str], size: float,
                 line_height: float, font: str):
        self.pdf, self.widths, self.headings = pdf, widths, headings
        self.size, self.line_height, self.font = size, line_height, font
        self._widths: dict[tuple[str, str], float] = {}
        self._heading_row()

    def add(self, cells: list[str]) -> None:
        self._row(cells, "")

    def _heading_row(self) -> None:
        self._row(self.headings, "B", heading=True)

    def _row(self, cells: list[str], style: str, heading: bool = False) -> None:
        pdf = self.pdf
        pdf.set_font(self.font, style, self.size)
        lines = [self._wrapped(text, width - 2 * pdf.c_margin, style)
                 for text, width in zip(cells, self.widths)]
        height = max(len(cell) for cell in lines) * self.line_height + 2 * _PAD
        if not heading and pdf.get_y() + height > pdf.page_break_trigger:
            pdf.add_page()
            self._heading_row()
            pdf.set_font(self.font, style, self.size)
        x, y = pdf.l_margin, pdf.get_y()
        if heading:
            pdf.set_fill_color(*HEADING_FILL)
        for cell, width in zip(lines, self.widths):
            pdf.rect(x, y, width, height, style="DF" if heading else "D")
            for number, line in enumerate(cell, start=1):
                # the baseline a fifth of a line above the line's bottom
                pdf.text(x + pdf.c_margin, y + _PAD + (number - 0.2) * self.line_height, line)
            x += width
        pdf.set_xy(pdf.l_margin, y + height)

    def _wrapped(self, text: str, room: float, style: str) -> list[str]:
        """`text` in lines at most `room` wide: broken at spaces, a longer word by characters."""
        lines, line, used = [], "", 0.0
        space = self._width(" ", style)
        for word in text.split():
            size = sum(self._width(ch, style) for ch in word)
            if line and used + space + size <= room:
                line, used = f"{line} {word}", used + space + size
                continue
            if line:
                lines.append(line)
            line, used = "", 0.0
            for ch in word:                    # a word wider than the cell: by characters
                step = self._width(ch, style)
                if line and used + step > room:
                    lines.append(line)
                    line, used = "", 0.0
                line, used = line + ch, used + step
        return lines + [line] if line or not lines else lines

    def _width(self, ch: str, style: str) -> float:
        key = (style, ch)
        if key not in self._widths:
            self._widths[key] = self.pdf.get_string_width(ch)
        return self._widths[key]
