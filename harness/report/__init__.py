"""The comparison report: ``python -m harness.report`` reads a harness experiment from MLflow and
writes a model x dataset table (Markdown, CSV, self-contained HTML) and a chart.

``collect`` reads the runs through ``MlflowClient`` into the types of ``runs``, with each figure's
documents (``documents``) and each row's variant (``variant``); ``table`` picks each dataset's
headline metric and builds the rows; ``cells`` words them, ``render`` writes report.md and
report.csv, ``page`` report.html, ``chart`` chart.png; ``cli`` is the command line.
"""
