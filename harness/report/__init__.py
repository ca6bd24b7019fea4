"""The comparison report: ``python -m harness.report`` reads a harness experiment from MLflow and
writes a model x dataset table (Markdown, CSV, self-contained HTML) and a chart.

``collect`` reads the runs through ``MlflowClient``, ``table`` picks each dataset's headline
metric and builds the rows, ``render`` writes the files, ``cli`` is the command line.
"""
