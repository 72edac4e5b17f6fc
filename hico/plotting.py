"""Plot styling shared by the tutorial notebooks, so that their code cells show the computation, not the styling.

One colour convention for every cosine-similarity heat map: ``SIMILARITY_SCALE`` (plotly's ``RdBu_r``), red =
similar (+1), white = orthogonal (0), blue = opposite (-1).
"""

from __future__ import annotations

SIMILARITY_SCALE = "RdBu_r"


def similarity_coloraxis(zmin: float = -1.0, zmax: float = 1.0) -> dict:
    """A plotly ``coloraxis`` for cosine similarities on ``SIMILARITY_SCALE``, from ``zmin`` to ``zmax``."""
    return dict(colorscale=SIMILARITY_SCALE, cmin=zmin, cmax=zmax, colorbar=dict(title="cos"))


def square_panels(fig, ticks: bool = False):
    """Make every subplot of ``fig`` a square image panel with row 0 at the top; returns ``fig``."""
    fig.update_yaxes(autorange="reversed", showticklabels=ticks, constrain="domain")
    fig.update_xaxes(showticklabels=ticks, constrain="domain")
    fig.for_each_yaxis(lambda ax: ax.update(scaleanchor=ax.anchor))
    return fig
