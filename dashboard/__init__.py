"""View helpers shared by the Streamlit pages: where things are, cached loaders, Plotly charts.

Pages stay thin: data, models, metrics and images come from ``fer_core``; this package only caches
them for Streamlit and turns report data into figures.
"""
