"""`mf ui`: the local web page (see app.py)."""
