"""Evidence that transfer helped: frozen features and classical heads (features), baselines inside a run
(baselines), and the report that sets runs of several strategies side by side (compare)."""
