"""Data for reinlite: the class table, datasets in the real layouts, the embedded benchmark.

Submodules:
    synthetic   procedural street scenes (numpy only), the embedded benchmark's renderer
"""
