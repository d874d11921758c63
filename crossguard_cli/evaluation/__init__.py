"""Evaluation: labelled data, metrics, threshold tuning and plots for `crossguard eval`."""
