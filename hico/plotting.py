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


def frame_grid(frames, titles, cols: int, height: int | None = None):
    """Grey uint8 frames ``(n, H, W)`` as a plotly grid of images, ``cols`` per row, one title per frame."""
    import numpy as np
    import plotly.express as px

    fig = px.imshow(
        np.stack(frames),
        facet_col=0,
        facet_col_wrap=cols,
        binary_string=True,
        facet_col_spacing=0.01,
        facet_row_spacing=0.07,
    )
    for ann in fig.layout.annotations:  # plotly titles the facets "facet_col=k": use ours
        ann.text = titles[int(ann.text.split("=")[1])]
    fig.update_xaxes(showticklabels=False).update_yaxes(showticklabels=False)
    rows = -(-len(frames) // cols)
    return fig.update_layout(height=height or 60 + 190 * rows, margin=dict(l=10, r=10, t=40, b=10))


def image_trace(img, stride: int = 1, colorscale: str = "gray", zmin=None, zmax=None):
    """An ``(h, w)`` array as a heatmap trace whose cells cover ``stride`` x ``stride`` input pixels, so that
    feature maps of any level line up with the input frame."""
    import plotly.graph_objects as go

    offset = (stride - 1) / 2
    return go.Heatmap(
        z=img, x0=offset, dx=stride, y0=offset, dy=stride, colorscale=colorscale, zmin=zmin, zmax=zmax, showscale=False
    )


def image_panels(fig, height: int):
    """Square image panels without ticks or grid, row 0 at the top, ``height`` px tall; returns ``fig``."""
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, constrain="domain")
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, autorange="reversed", constrain="domain")
    fig.for_each_yaxis(lambda ax: ax.update(scaleanchor=ax.anchor))
    return fig.update_layout(height=height, margin=dict(l=10, r=10, t=90, b=10), plot_bgcolor="white")


def pair_similarity_map(s, names, title: str):
    """A ``2N x 2N`` cosine-similarity matrix ``s`` on ``SIMILARITY_SCALE``, rows = anchors, columns = candidates,
    with each anchor's positive (the vector ``N`` places away) circled."""
    import plotly.express as px

    n = len(names) // 2
    fig = px.imshow(
        s,
        x=names,
        y=names,
        zmin=-1,
        zmax=1,
        color_continuous_scale=SIMILARITY_SCALE,
        title=title,
        labels=dict(x="candidate k", y="anchor i", color="sim"),
    )
    rows = list(range(2 * n))
    cols = [(i + n) % (2 * n) for i in rows]
    fig.add_scatter(
        x=[names[c] for c in cols],
        y=[names[r] for r in rows],
        mode="markers",
        name="positive",
        marker=dict(symbol="circle-open", size=14, color="black", line=dict(width=2)),
    )
    return fig.update_layout(height=520, width=600, legend=dict(orientation="h", y=-0.12))
