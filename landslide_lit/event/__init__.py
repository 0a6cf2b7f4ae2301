"""Datacubes for a new event: Sentinel-1 RTC scenes, a DEM and an inventory onto one grid.

:mod:`~landslide_lit.event.grid` (the target grid), :mod:`~landslide_lit.event.scenes`
(acquisitions and the sources of their bands), :mod:`~landslide_lit.event.build` (the cube
writer) and :mod:`~landslide_lit.event.command` (``landslide-lit cube``). These modules need
the ``event`` extra (rasterio, pyproj, geopandas...); nothing in the core package imports
them, so the core install works without it.
"""

__all__: list[str] = []
