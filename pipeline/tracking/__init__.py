"""Everything MLflow, in three layers a reader can take one at a time.

- ``names``: every experiment, run, tag, alias and registered-model name the project writes.
- ``store``: the project's store and experiment; every call raises one clear error on failure.
  Commands whose whole job is in MLflow (publish, retune, history) use it directly.
- ``search_runs``: the record of one search (a parent run, a child run per trial), written
  through ``spool``: a queue on disk that a background thread sends, so a store outage never
  stops or slows training and loses nothing.
- ``registry``: registered models, versions and the champion alias.
"""
