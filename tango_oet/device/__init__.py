"""Tango device layer: the OETScheduler device, its server, registration and quick start.

The only server-side package that imports `tango`. This `__init__` imports nothing, so that
`tango_oet.device.server` (re-imported as `__main__` by every forkserver/spawn worker) stays
cheap and worker processes never load tango.
"""
