"""The search, on KerasTuner's engine: a family's hypermodel (``hypermodel``), oracles with a
trial cap, a wall-clock budget and warm starts (``oracles``), and tuners that track trials in
MLflow, seed them and fail bad ones without stopping the search (``tuners``). The tune stage
(``pipeline.tune``) wires them together."""
