"""The evaluation stages and the report.

- :mod:`.metrics`: the GLUE metrics on numpy arrays.
- :mod:`.evaluation`: a model's predictions over a record file, in file order, and its metrics.
- :mod:`.speed`: parameters, size, latency at batch 1 and throughput at batch 32.
- :mod:`.eval_json`: the ``*_eval.json`` of a model, written and read.
- :mod:`.report`: the task's table (Markdown, CSV, HTML) and its plot.
"""
