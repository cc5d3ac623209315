"""Pictures of every z-point, by layer.

- ``projections``: which views and canvases (from the statistics), overlays;
- ``columns``: pure kernels — a block's columns, datashader canvases, their sum;
- ``aggregate``: render's one pass over the store, through :mod:`latentdask.reduction`;
- ``draw``: matplotlib drawing and the PNG files;
- ``command``: ``latentdask render`` (:func:`~latentdask.render.command.render`);
- ``explore`` and ``dashboard``: ``latentdask serve``, columns held in the cluster's memory.
"""
