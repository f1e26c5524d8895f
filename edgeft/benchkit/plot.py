"""Quality against speed, one point per model, with the Pareto front and the chosen variant ringed:
the one figure behind accuracy_latency.png and report.html's inline SVG."""
from __future__ import annotations


def pareto(points: list[dict]) -> list[dict]:
    """The points no other point beats on both axes (x: lower is better, y: higher is better)."""
    front = [p for p in points if not any(q["x"] <= p["x"] and q["y"] >= p["y"] and (q["x"], q["y"]) != (p["x"], p["y"])
                                          for q in points)]
    return sorted(front, key=lambda p: p["x"])


def figure(spec: dict, chosen: str | None = None, title: str | None = None):
    """The matplotlib figure for a report's plot spec (points, axis labels); the caller saves and closes it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points, front = spec["points"], pareto(spec["points"])
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    ax.scatter([p["x"] for p in points], [p["y"] for p in points], s=36, color="#5f6368", zorder=2)
    ax.step([p["x"] for p in front], [p["y"] for p in front], where="post", color="#1a73e8", lw=1.5,
            label="Pareto front", zorder=1)
    for p in points:
        mark = p["name"] == chosen
        if mark:
            ax.scatter([p["x"]], [p["y"]], s=160, facecolors="none", edgecolors="#137333", lw=2, zorder=3,
                       label="chosen")
        ax.annotate(p["name"], (p["x"], p["y"]), textcoords="offset points", xytext=(5, 4), fontsize=8,
                    fontweight="bold" if mark else "normal")
    ax.set_xlabel(spec["xlabel"])
    ax.set_ylabel(spec["ylabel"])
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def close(fig) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)
