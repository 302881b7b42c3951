"""A train/eval loss chart drawn with braille dots: two series, y labels, step axis.

Self-made on purpose: textual-plotext is unmaintained and not installed. Everything about
drawing stays in this one widget, so it can be swapped without touching the screens.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich.text import Text
from textual.widget import Widget

_BRAILLE_BASE = 0x2800
# Bit for the dot at (column 0..1, row 0..3) inside one braille cell.
_DOT_BITS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))

Series = Sequence[tuple[float, float]]


def _label(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def _per_column(dots: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """One dot per x pixel (the mean of its points): a 10,000-step run draws as fast as 100."""
    merged: list[tuple[int, int]] = []
    column, total, count = None, 0, 0
    for x, y in dots:
        if x != column and count:
            merged.append((column, round(total / count)))
            total = count = 0
        column, total, count = x, total + y, count + 1
    if count:
        merged.append((column, round(total / count)))
    return merged


EVAL_MARK = "●"


class _Canvas:
    """A grid of braille cells; each remembers which series set its dots (eval wins)."""

    def __init__(self, columns: int, rows: int) -> None:
        self.columns, self.rows = columns, rows
        self.bits = [[0] * columns for _ in range(rows)]
        self.owner = [[0] * columns for _ in range(rows)]

    def dot(self, x: int, y: int, series: int) -> None:
        if 0 <= x < self.columns * 2 and 0 <= y < self.rows * 4:
            row, column = y // 4, x // 2
            self.bits[row][column] |= _DOT_BITS[x % 2][y % 4]
            self.owner[row][column] = max(self.owner[row][column], series)

    def line(self, x0: int, y0: int, x1: int, y1: int, series: int) -> None:
        """Bresenham between two dots, so a sparse series still reads as a curve."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        error = dx + dy
        while True:
            self.dot(x0, y0, series)
            if x0 == x1 and y0 == y1:
                return
            doubled = 2 * error
            if doubled >= dy:
                error += dy
                x0 += sx
            if doubled <= dx:
                error += dx
                y0 += sy


class LossChart(Widget):
    """Train loss as a braille line, eval loss as ● markers in another colour, on one scale."""

    COMPONENT_CLASSES = {"loss-chart--train", "loss-chart--eval", "loss-chart--axis"}
    DEFAULT_CSS = """
    LossChart { height: 1fr; min-height: 5; }
    LossChart > .loss-chart--train { color: $accent; }
    LossChart > .loss-chart--eval { color: $primary; text-style: bold; }
    LossChart > .loss-chart--axis { color: $text-muted; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.train: list[tuple[float, float]] = []
        self.eval: list[tuple[float, float]] = []
        self.x_max: float | None = None

    def set_series(self, train: Series, eval: Series, x_max: float | None = None) -> None:
        self.train, self.eval, self.x_max = list(train), list(eval), x_max
        self.refresh()

    def render(self) -> Text:
        width, height = self.size.width, self.size.height
        train_style = self.get_component_rich_style("loss-chart--train")
        eval_style = self.get_component_rich_style("loss-chart--eval")
        axis_style = self.get_component_rich_style("loss-chart--axis")
        # Each space ends a styled run rather than starting the next one: SVG renderers
        # (rsvg, some browsers) drop a text element's leading space ("eval1.43" in screenshots).
        legend = Text("loss  ")
        legend.append("⣿ train ", train_style)
        if self.train:
            legend.append(f"{self.train[-1][1]:.4f}")
        legend.append("  ")
        legend.append(f"{EVAL_MARK} eval ", eval_style)
        if self.eval:
            legend.append(f"{self.eval[-1][1]:.4f}")
        points = self.train + self.eval
        if not points or height < 4 or width < 16:
            return legend + Text("\nwaiting for the first loss value…", axis_style)

        values = [y for _, y in points]
        low, high = min(values), max(values)
        pad = (high - low) * 0.05 or abs(high) * 0.1 or 1.0
        low, high = max(0.0, low - pad) if low >= 0 else low - pad, high + pad
        x_low = 0.0
        x_high = max(self.x_max or 0, max(x for x, _ in points), 1)
        labels = [_label(high), _label((high + low) / 2), _label(low)]
        label_width = max(len(label) for label in labels)
        columns, rows = width - label_width - 1, height - 2
        canvas = _Canvas(columns, rows)

        def to_dot(x: float, y: float) -> tuple[int, int]:
            px = round((x - x_low) / (x_high - x_low) * (columns * 2 - 1))
            py = round((high - y) / (high - low) * (rows * 4 - 1))
            return px, py

        # Eval points are few (one per eval_steps): a marker per point reads better than a line,
        # and keeps them apart from the train curve without relying on colour alone.
        marks = set()
        for x, y in self.eval:
            px, py = to_dot(x, y)
            marks.add((min(rows - 1, max(0, py // 4)), min(columns - 1, max(0, px // 2))))
        for series_id, series in ((1, self.train),):
            previous = None
            for current in _per_column(to_dot(x, y) for x, y in series):
                if previous is None:
                    canvas.dot(*current, series_id)
                else:
                    canvas.line(*previous, *current, series_id)
                previous = current

        text = legend
        label_rows = {0: labels[0], rows // 2: labels[1], rows - 1: labels[2]}
        styles = {1: train_style, 2: eval_style}
        for row in range(rows):
            text.append("\n")
            label = label_rows.get(row)
            text.append(f"{label:>{label_width}}┤" if label else " " * label_width + "│", axis_style)
            for column in range(columns):
                if (row, column) in marks:
                    text.append(EVAL_MARK, eval_style)
                    continue
                bits = canvas.bits[row][column]
                char = chr(_BRAILLE_BASE + bits) if bits else " "
                text.append(char, styles.get(canvas.owner[row][column]))
        right = f"{x_high:.0f}"
        left = "step 0"
        gap = max(1, columns - len(left) - len(right))
        text.append("\n" + " " * label_width + "└" + left + " " * gap + right, axis_style)
        return text
