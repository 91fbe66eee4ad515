"""Metrics computed offline: classification (scikit-learn), generation (sacrebleu, rouge-score), speech (WER/CER)."""
