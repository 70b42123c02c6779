"""Evaluation of generated molecules (the settings here; the pipeline in ``elign.evaluation.evaluate``)."""
