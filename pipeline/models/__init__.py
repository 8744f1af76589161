"""The model builders, one module per family (see ``pipeline.families`` for the records that
name them), and the input stem they share."""
