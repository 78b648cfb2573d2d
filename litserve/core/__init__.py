"""The serving core: the app side (app, handler, pool, scheduler, supervisor, validation, metrics),
the process side (worker, codec) and the wire between them (protocol).

Nothing here is public API: import what users need from ``litserve``.
"""
