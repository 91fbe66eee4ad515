"""Metrics computed offline: classification and regression (scikit-learn, scipy), generation (sacrebleu, rouge-score),
speech (WER/CER)."""
