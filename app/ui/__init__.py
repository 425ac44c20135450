"""Streamlit helpers shared by the pages of the GastricVision app.

Only user interface code lives here: caching, widgets, charts and error display. Every
computation is a call into the ``gastricvision`` library.
"""
