"""``latentdask serve``: a panel app to explore every z-point of a store in the browser.

The projection (a pair of components or of principal axes, optionally a slice, coloured
by an attribute) is re-aggregated with datashader over **all** points on every zoom and
pan, from the columns held in the cluster's memory (:mod:`latentdask.render.explore`). Beside it:
both components' histograms, the correlation heatmap (a click selects that pair), and the
headline statistics. Hovering shows the real image nearest to the cursor (from the view's plane
indexes on the workers); a click shows the nearest real images, keeps the nearest, and shows
the image the decoder makes at that latent position (every other component at the mean). A
toggle draws the images of representative points over the dense cells of the canvas shown
(:mod:`latentdask.render.thumbnails`).

A box or a lasso drawn in a pair of components selects rows over every z-point, evaluated
on the workers (:mod:`latentdask.render.selected`); selections combine (new, add, subtract,
intersect). Beside the projection: the selection's count and share, the components that set
it apart (a click shows that pair), where the store has CelebA attributes the ones whose share
in it differs most from their share in the corpus, its histograms over the corpus's, the decoded
image of its mean, a seeded sample of its real images, and ``Export``, which writes
``selection-NAME.zarr`` for ``--rows`` (stats, render, score). The linked view, a second
projection with its own pair or principal axes, draws the selection's rows in orange over
every point in grey; a click on the heatmap or on a component sets the pair of the view the
"clicks show" buttons name.
:func:`explore` gives the same app to a notebook.

Everything the page loads comes from the app's own server (bokeh and panel resources are
served by it, no template, no remote fonts), so it works on a closed network.

Text from data reaches the page only through :mod:`~latentdask.render.dashboard.figures`, which
escapes it.

The app's parts, each a :class:`panel.viewable.Viewer` over what all sessions share
(:class:`~latentdask.render.dashboard.sources.Sources`): the controls
(:mod:`~latentdask.render.dashboard.controls`), the projection's plots
(:mod:`~latentdask.render.dashboard.projection`), the images under it
(:mod:`~latentdask.render.dashboard.images`), the linked view
(:mod:`~latentdask.render.dashboard.linked`) and the selection's panel
(:mod:`~latentdask.render.dashboard.selection`), composed by
:class:`~latentdask.render.dashboard.app.Dashboard`.
"""

from latentdask.render.dashboard.app import Dashboard, explore, serve
from latentdask.render.dashboard.controls import THUMBNAILS_TOGGLE
from latentdask.render.dashboard.linked import CLICKS_SHOW
from latentdask.render.dashboard.projection import CANVAS
from latentdask.render.dashboard.sources import ServeError, Sources

__all__ = [
    "CANVAS",
    "CLICKS_SHOW",
    "THUMBNAILS_TOGGLE",
    "Dashboard",
    "ServeError",
    "Sources",
    "explore",
    "serve",
]
