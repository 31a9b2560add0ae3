"""Reproducible evaluation: task suites (registry), task kinds (kinds/), readers, the harness with
baselines in the same run, frozen-backbone probes, probes during pretraining, and annotation-derived
tasks."""
