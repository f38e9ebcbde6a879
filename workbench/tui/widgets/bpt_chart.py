"""The Tokenizer pane's chart: bytes per token against vocab size. Its own module, so plotext
is imported after the app's first paint (the pane mounts it then)."""

from __future__ import annotations

from textual_plotext import PlotextPlot


class BytesPerTokenChart(PlotextPlot):
    """Bytes per token on held-out text against vocab size, one point per built tokenizer."""

    def show(self, infos) -> None:
        pts = sorted((i.stats.get("vocab_size"), i.stats.get("bytes_per_token")) for i in infos
                     if i.stats.get("vocab_size") and i.stats.get("bytes_per_token"))
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title("bytes per token (held-out) by vocab size")
        plt.xlabel("vocab size")
        if pts:
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            plt.plot(xs, ys, marker="braille")
            plt.scatter(xs, ys, marker="●")
            plt.xticks(xs, [str(x) for x in xs])
            if len(set(xs)) == 1:
                plt.xlim(xs[0] - 1, xs[0] + 1)
            plt.ylim(0, max(ys) * 1.15)
        self.refresh()
