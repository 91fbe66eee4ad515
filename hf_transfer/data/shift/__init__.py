"""Synthetic target conditions (`--synthetic_shift`, `--eval_shift`): transforms that make source data look like the
target's (night images, telephone audio, typed text), chosen by name with a strength and a probability.

`transform` holds the record every transform fills; `image`, `audio` and `text` the transforms of each modality;
`spec` the registry, the spec syntax and the recipes' options; `plan` what a run does with them (row seeds, the
shifted validation copy, the epoch callback); `preview` the before/after file written at the start of a run.
docs/shift.md is the user's guide.
"""
